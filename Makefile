# The README's two commands. Both create .venv if missing and are safe to re-run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install install-dev lint torch

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Install torch first only when it is not importable, so GPU users keep their build and CPU machines skip CUDA.
torch: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"

install: torch
	$(PY) -m pip install -q -e ".[eval,plots,real]"

install-dev: torch
	$(PY) -m pip install -q -e ".[dev]"

lint: install-dev
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m trl_distill.cli lab

test: install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# Speed and memory against TRL's trainers and naive references at real vocabularies (docs/benchmarks.md); 15 min on 2 CPUs.
bench: install-dev
	$(PY) benchmarks/run_all.py
