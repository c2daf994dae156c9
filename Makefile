# The two set-up commands of the README.  Each creates or reuses .venv and installs what it needs.
PY_SYS  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESET  ?= smoke
ARGS    ?=
export OMP_NUM_THREADS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: bench test lint clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)        ## run the benchmark (PRESET=smoke|default|...; ARGS="--set seeds=[0,1]")
	$(PY) pipelines/benchmark.py --preset $(PRESET) $(ARGS)

test: $(STAMP)         ## lint, then the whole test suite (service tests included)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-runs:
	rm -rf runs
