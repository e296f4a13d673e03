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


CHAT_TOKENIZERS = ("qwen3", "llama31", "gemma3")


@pytest.fixture(params=CHAT_TOKENIZERS)
def chat_tokenizer(request):
    """A fresh offline tokenizer reproducing Qwen3, Llama-3.1 or Gemma-3 (see tests/chat_tokenizers.py)."""
    from chat_tokenizers import build_chat_tokenizer

    return build_chat_tokenizer(request.param)


@pytest.fixture
def llama31_tokenizer():
    """The offline Llama-3.1 tokenizer: BOS in the template and from the tokenizer, no pad token."""
    from chat_tokenizers import build_chat_tokenizer

    return build_chat_tokenizer("llama31")


@pytest.fixture
def cpu_training_args(tmp_path):
    """Builds the training arguments of a short CPU run writing to `tmp_path`, with no reports, no checkpoints and no
    progress bars: `cpu_training_args(SFTConfig, max_steps=3, learning_rate=1e-2)`."""

    def build(args_class, **fields):
        quiet = dict(report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
        return args_class(output_dir=str(tmp_path), **quiet, **fields)

    return build
