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

# The quick default matrix: every engine beside its baselines, for upper, sleep:10 and cpu:1 at
# 16 and 256 connections, 1 s per cell: 62 cells, 2.6 minutes on the 2-core reference machine
# (2.5 s a cell: 1.2 s load, the rest is starting and stopping servers and load processes).
RUN_ARGS ?= --connections 16,256 --duration 1 --warmup 0.2
REPORT_DIR ?= report

run: $(STAMP)
	$(BIN)/multiserve compare $(RUN_ARGS) --out $(REPORT_DIR)
	@echo "Report: $(abspath $(REPORT_DIR))/report.md (results.json and the plots beside it)"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out report
