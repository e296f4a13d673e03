"""Session fixtures: the offline tiny world, built in seconds."""

import os

import pytest
import torch


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(1)  # tiny models: one thread avoids oversubscription when tests share the cores


@pytest.fixture(scope="session")
def tokenizer():
    from trl_distill.lab.world.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_student(tokenizer):
    """A fresh random-init Qwen2 student (size xs) for each test."""
    from trl_distill.lab.world.models import tiny_model

    return tiny_model(tokenizer, "xs", "qwen2", seed=0)


@pytest.fixture
def tiny_teacher(tokenizer):
    """A fresh random-init Llama teacher (size xs, other seed) sharing the student's vocabulary."""
    from trl_distill.lab.world.models import tiny_model

    return tiny_model(tokenizer, "xs", "llama", seed=1)


@pytest.fixture(scope="session")
def arithmetic(tokenizer):
    from trl_distill.lab.world.tasks import make_task_splits

    return make_task_splits(("arithmetic",), train_size=64, dev_size=16, test_size=16, seed=0)
