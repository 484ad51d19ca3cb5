# opensora-platform: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow lint bench workflows images clean gpu-wheels gpu-check

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-colossalai.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0          # local CPU wheel; install first so nothing pulls CUDA
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt   # scenedetect without opencv-python (see the file)
	# ColossalAI without its declared pins (they would replace torch with an old CUDA build)
	$(PIP) install -q -r requirements-colossalai.txt
	$(PIP) install -q --no-deps colossalai==0.5.0 galore-torch==1.0
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# The local end-to-end run (synthetic data -> pipeline via kfp.local -> MLflow registry); DEMO_ARGS e.g.
# "--steps 200 --workdir /tmp/demo". Prints metrics, video paths, model version/aliases and the `mlflow ui` line.
demo: $(STAMP)
	$(PY) -m workflows.demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" -q

# ruff, and the import rules of .importlinter (layers, no circles, no kfp/kubernetes; see ARCHITECTURE.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	for b in benchmarks/*.py; do case $$b in */gpu_*|*/_*) continue;; esac; $(PY) $$b || exit 1; done

# The GPU check (benchmarks/README.md): wheels the GPU machine lacks into .whl/ (git-ignored), then one call there
# runs `pytest -m gpu`, gpu_step.py and gpu_sample.py (8 minutes) writing JSON lines + a summary to $OUT or
# benchmarks/results/. GPU_CHECK_TINY=1 runs the same on the CPU with tiny sizes. No venv needed on the GPU.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_PLATFORMS := $(foreach n,2_17 2_24 2_27 2_28 2_31 2_34 2_35,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64
gpu-wheels:
	mkdir -p .whl
	$(GPU_PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl -r benchmarks/gpu_wheels.txt
	$(GPU_PY) -m pip wheel -q --no-deps -w .whl colossalai==0.5.0
	du -sh .whl

gpu-check:
	$(GPU_PY) benchmarks/gpu_check.py $(if $(filter 1,$(GPU_CHECK_TINY)),--tiny)

# Recompile workflows/*.yaml from workflows/train.py (a test fails when a committed YAML is stale).
workflows: $(STAMP)
	$(PY) -m workflows.compile

# Submit a compiled pipeline through kfp.Client: make submit PIPELINE=train_512 EXPERIMENT=opensora \
#   ARGS="--host https://kfp.example.org --param raw_data_uri=s3://opensora-datasets/raw --param num_nodes=4"
PIPELINE ?= train_512
EXPERIMENT ?= opensora
.PHONY: submit
submit: $(STAMP)
	$(PY) -m workflows.submit $(PIPELINE) --experiment "$(EXPERIMENT)" $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# Container images (docker, buildah or podman); tags follow the project version.
IMAGE_REPO ?= ghcr.io/opensora-platform
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTAINER_ENGINE ?= $(shell command -v docker || command -v buildah || command -v podman)
IMAGE_BUILD = $(if $(filter docker,$(notdir $(CONTAINER_ENGINE))),DOCKER_BUILDKIT=1 $(CONTAINER_ENGINE) build,$(CONTAINER_ENGINE) build --layers --ignorefile images/$(1)/Dockerfile.dockerignore)

images:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make images: needs docker, buildah or podman on PATH (or CONTAINER_ENGINE=...)"; exit 1; }
	$(call IMAGE_BUILD,runtime) -f images/runtime/Dockerfile -t $(IMAGE_REPO)/runtime:$(IMAGE_TAG) .
	$(call IMAGE_BUILD,train) -f images/train/Dockerfile -t $(IMAGE_REPO)/train:$(IMAGE_TAG) .
