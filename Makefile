# The README's two commands. Both create .venv if missing and are safe to re-run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-trl-lowest bench install install-dev lint torch

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Install torch first only when it is not importable, so GPU users keep their build and CPU machines skip CUDA.
torch: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"

# --no-compile: no bytecode for the ~13,000 modules of the dependencies at install (transformers' 2,951 alone take
# 5.6 s on one core); Python compiles the few thousand the lab imports on first use and caches them as usual
install: torch
	$(PY) -m pip install -q --no-compile -e ".[eval,plots,real]"

install-dev: torch
	$(PY) -m pip install -q -e ".[dev]"

lint: install-dev
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m trl_distill.cli lab

test: install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The lowest TRL of pyproject.toml's range, in its own venv, on the tests that lean on TRL's trainers and internals
# (docs/trl_compatibility.md); `make test` gets the newest TRL in the range.
TRL_LOWEST ?= 1.16.0
TRL_VENV := .venv-trl-$(TRL_LOWEST)
TRL_TESTS := tests/test_scas_trainer.py tests/test_dmc_callback.py tests/test_ogls_sd_trainer.py tests/test_camopd.py \
	tests/test_camopd_dropin.py tests/test_core_tokenization.py tests/test_core_teachers.py tests/test_core_math.py

test-trl-lowest:
	@test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	@$(TRL_VENV)/bin/python -c "import torch" 2>/dev/null || $(TRL_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(TRL_VENV)/bin/python -m pip install -q -e . "trl==$(TRL_LOWEST)" pytest pytest-timeout
	$(TRL_VENV)/bin/python -c "import trl; assert trl.__version__ == '$(TRL_LOWEST)', trl.__version__"
	$(TRL_VENV)/bin/python -m pytest -q $(TRL_TESTS)

# Speed and memory against TRL's trainers and naive references at real vocabularies (docs/benchmarks.md); 15 min on 2 CPUs.
bench: install-dev
	$(PY) benchmarks/run_all.py
