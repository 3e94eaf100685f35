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
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The quick default matrix, about 2 minutes on 2 cores: every engine beside its baselines, for
# upper, sleep:10 and cpu:1 at 16 and 256 connections, 1 s per cell (`multiserve compare -h`).
RUN_ARGS ?= --connections 16,256 --duration 1 --warmup 0.3
REPORT_DIR ?= report

run: $(STAMP)
	$(BIN)/multiserve compare $(RUN_ARGS) --out $(REPORT_DIR)
	@echo "Report: $(abspath $(REPORT_DIR))/report.md (results.json and the plots beside it)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out report
