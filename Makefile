# Two commands do all the set-up: `make run` and `make test`. Both bootstrap .venv once;
# the stamp file makes a second run skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A GIL build gets the extras that have no free-threaded build (gevent, psycopg's binary build);
# PEP 508 has no marker for free-threading, so the Makefile chooses them, per venv. The HTTP
# peers (compare --protocol http's baselines) run beside the GIL build's compare.
EXTRAS := test,gevent,binary,peers

# The free-threaded side (issue 13, docs/free-threading.md): `make ft` finds or builds a
# --disable-gil CPython (tools/build-ft-python.sh: $$PYTHON_FT, python3.14t/3.13t on PATH, else
# CPython 3.13 from Debian's source into $${MULTISERVE_FT_CACHE:-$$HOME/.cache/multiserve}/cpython-3.13t,
# outside the tree, reused by every clone) and installs multiserve in .venv-ft without those extras.
FT_VENV  := .venv-ft
FT_BIN   := $(FT_VENV)/bin
FT_STAMP := $(FT_VENV)/.installed
FT_EXTRAS := test

.PHONY: run test serve clean ft test-ft

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

# A second run costs one `python -c ''`: the stamp stands while the venv's interpreter runs.
ft:
	@$(FT_BIN)/python -c '' 2>/dev/null || rm -f $(FT_STAMP)
	@$(MAKE) --no-print-directory $(FT_STAMP)
	@$(FT_BIN)/multiserve engines | tail -n 1

# --prefer-binary: a package whose newest release has no cp313t wheel (matplotlib, hypothesis, see
# docs/free-threading.md) takes its newest release that has one, instead of building the sdist.
$(FT_STAMP): pyproject.toml tools/build-ft-python.sh
	@py=$$(tools/build-ft-python.sh) && echo "free-threaded interpreter: $$py" \
	  && { $(FT_BIN)/python -c '' 2>/dev/null || { rm -rf $(FT_VENV) && "$$py" -m venv $(FT_VENV); }; }
	$(FT_BIN)/python -m pip install -q --upgrade pip
	$(FT_BIN)/python -m pip install -q --prefer-binary -e '.[$(FT_EXTRAS)]'
	touch $(FT_STAMP)

# MIMALLOC_PURGE_DELAY=0: the free-threaded build's allocator (mimalloc) otherwise keeps freed
# pages for a while, and the memory-bound conformance checks (a flood, a client that never reads)
# would measure that delay, not the server's buffers (repeated floods converge; see
# docs/free-threading.md).
test-ft: ft
	MIMALLOC_PURGE_DELAY=0 $(FT_BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(FT_VENV) out report
