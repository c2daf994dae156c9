# The two set-up commands of the README.  Each creates or reuses .venv and installs what it needs.
PY_SYS  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESET  ?= default
ARGS    ?=
OUT     ?= runs
export OMP_NUM_THREADS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: bench test lint mlflow-ui clean-runs

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)        ## run the benchmark (PRESET=smoke|default|...; ARGS="--set seeds=[0,1]")
	$(PY) pipelines/benchmark.py --preset $(PRESET) --out $(OUT) $(ARGS)

test: $(STAMP)         ## lint, then the whole test suite (service tests included)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(ARGS)

mlflow-ui: $(STAMP)    ## browse runs/mlflow.db (or OUT=<folder>) at http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(OUT))/mlflow.db --host 127.0.0.1 --port 5000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-runs:
	rm -rf runs
