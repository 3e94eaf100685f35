# Two commands do all the set-up: `make run` and `make test`. Both bootstrap .venv once;
# the stamp file makes a second run skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,peers]'
	touch $(STAMP)

# The quick default matrix: every engine beside its baselines, for upper, sleep:10 and cpu:1 at
# 16 and 256 connections: 62 cells x 3 interleaved runs (the fewest that give each cell a 95%
# interval), 0.5 s measured after 0.1 s of warm-up on primed connections: about 4 minutes on the
# 2-core reference machine (a run costs ~1.3 s: start, prime, load, stop). Longer windows or more
# runs narrow the intervals, so more columns name a winner; see docs/benchmarks.md for the full run.
RUN_ARGS ?= --connections 16,256 --duration 0.5 --warmup 0.1 --repeat 3
REPORT_DIR ?= report

run: $(STAMP)
	$(BIN)/multiserve compare $(RUN_ARGS) --out $(REPORT_DIR)
	@echo "Report: $(abspath $(REPORT_DIR))/report.md (results.json and the plots beside it)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out report
