# The two set-up commands of the README.  Each creates or reuses .venv and installs what it needs.
PY_SYS  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PRESET  ?= default
ARGS    ?=
OUT     ?= runs
PORT    ?= 5000
# pytest-xdist processes for `make test`: each test starts its own Ray, MLflow or S3 server on free ports
TEST_WORKERS ?= 2
export OMP_NUM_THREADS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help bench test lint mlflow-ui clean-runs

help:                  ## list the targets and what they do (the default target)
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):[^#]*## /\1\t/' | \
	    awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: PRESET=$(PRESET) OUT=$(OUT) ARGS=... PORT=$(PORT) TEST_WORKERS=$(TEST_WORKERS)"
	@echo "  the entry points: .venv/bin/python pipelines/benchmark.py --help (--list, --dry-run)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)        ## run the benchmark (PRESET=smoke|default|...; ARGS="--set seeds=[0,1]")
	$(PY) pipelines/benchmark.py --preset $(PRESET) --out $(OUT) $(ARGS)

test: $(STAMP)         ## lint, then the whole test suite (service tests included), TEST_WORKERS processes at once
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

mlflow-ui: $(STAMP)    ## browse runs/mlflow.db (or OUT=<folder>) at http://127.0.0.1:5000 (or PORT=<port>)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(OUT))/mlflow.db --host 127.0.0.1 --port $(PORT) \
	    --workers 1

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-runs:
	rm -rf runs

# The container image (infra/Dockerfile): podman or docker, whichever answers (CONTAINER_ENGINE empty), with this
# machine's pip configuration as a build secret.  Without an image registry:
#   make image BASE_IMAGE=localhost/sragu-base:bookworm     # builds that base first from Debian packages (root)
# Up to date (same inputs as the image's sragu.inputs label): nothing is built; FORCE=1 builds anyway.
CONTAINER_ENGINE ?=
IMAGE            ?= sragu-bench:0.1.0
BASE_IMAGE       ?= python:3.11-slim-bookworm
TORCH_VARIANT    ?= cpu

.PHONY: image

image:                 ## the container image $(IMAGE) (BASE_IMAGE=..., TORCH_VARIANT=cpu|cu128, CONTAINER_ENGINE=...)
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) BASE_IMAGE=$(BASE_IMAGE) TORCH_VARIANT=$(TORCH_VARIANT) \
	    infra/build_image.sh $(IMAGE)
