"""The TRL peer harness: TRL's own trainer tests run against trl-distill's trainers (opt-in, `-m peer`).

Needs the pinned copy of TRL's tests under tests/peer/trl_tests/ (write it with tests/peer/get_trl_tests.py);
without it every peer test is skipped with a message. Nothing is downloaded at test time:

- hub ids are mapped to tiny random models built offline with the same architecture config class
  (`MODELS`; the tokenizers are tests/chat_tokenizers.py's ChatML / Llama-3.1 ones); any other hub id skips the test
  with the reason `peer: hub id ... not mapped offline` (counted by run_peer.py);
- `load_dataset("trl-internal-testing/zen", config)` returns a small local stand-in with the same columns; other
  datasets skip the same way;
- `--peer-swap` (or `PEER_SWAP=1`) swaps the names the test modules use: `SFTTrainer` -> `SCASTrainer`,
  `SFTConfig` -> `SCASConfig`, `DistillationTrainer` -> `CaMOPDTrainer`, `DistillationConfig` -> `CaMOPDConfig` (ρ = 1).
"""

import functools
import os
import sys
from pathlib import Path

import pytest


COPY = Path(__file__).parent / "trl_tests"
sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/chat_tokenizers.py


def pytest_addoption(parser):
    parser.addoption("--peer-swap", action="store_true", help="run TRL's tests with trl-distill's trainers swapped in")


def _selected(config) -> bool:
    return "peer" in (config.getoption("-m") or "")


def pytest_ignore_collect(collection_path, config):
    # TRL's copy is imported only for a peer run: its imports need the shims below.
    if COPY in Path(collection_path).parents or Path(collection_path) == COPY:
        return None if _selected(config) else True
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "peer: TRL's own tests against our trainers (opt-in: -m peer)")
    if _selected(config):
        _install_shims()


def pytest_collection_modifyitems(config, items):
    selected = _selected(config)
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name != "peer" and COPY not in path.parents:
            continue
        item.add_marker(pytest.mark.peer)
        if not selected:
            item.add_marker(pytest.mark.skip(reason="peer harness: opt-in, run with -m peer"))
        elif not (COPY / "test_sft_trainer.py").exists():
            item.add_marker(
                pytest.mark.skip(reason=f"no pinned copy of TRL's tests in {COPY}; run tests/peer/get_trl_tests.py")
            )


def _missing_in_installed_trl(name):
    def missing(*args, **kwargs):
        pytest.skip(f"peer: {name} is not in the installed TRL (the pinned tests are newer there)")

    return missing


def _install_shims():
    """Names the pinned tests import from `trl` that the installed TRL 1.16.0 lacks (the pinned commit is not the
    1.16.0 tree): each becomes a placeholder that skips the test using it with the reason, so the rest of the file
    still runs. Test helpers only: the trainers themselves are never patched."""
    import ast
    import importlib

    SHIMMED.clear()
    for path in sorted(COPY.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("trl"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        qualified = f"{node.module}.{alias.name}"
                        setattr(module, alias.name, _missing_in_installed_trl(qualified))
                        SHIMMED.append(qualified)


SHIMMED: list[str] = []


# ------------------------------------------------------------------------------------------------ offline hub ids
# hub id -> (tokenizer kind in tests/chat_tokenizers.py, transformers config class, model type)
MODELS = {
    "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": ("qwen3", "Qwen2Config"),
    "trl-internal-testing/tiny-Qwen3ForCausalLM": ("qwen3", "Qwen3Config"),
    "trl-internal-testing/tiny-LlamaForCausalLM-3": ("llama31", "LlamaConfig"),
    "trl-internal-testing/tiny-LlamaForCausalLM-3.1": ("llama31", "LlamaConfig"),
    "trl-internal-testing/tiny-LlamaForCausalLM-3.2": ("llama31", "LlamaConfig"),
}


@functools.cache
def _local_model_dir(hub_id: str, root: str) -> str:
    import torch
    import transformers
    from chat_tokenizers import build_chat_tokenizer

    kind, config_name = MODELS[hub_id]
    tokenizer = build_chat_tokenizer(kind)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as the real tiny checkpoints ship a pad token
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    path = Path(root) / hub_id.replace("/", "--")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _resolve(name_or_path, root: str):
    if isinstance(name_or_path, str) and name_or_path.startswith("trl-internal-testing/"):
        if name_or_path not in MODELS:
            pytest.skip(f"peer: hub id {name_or_path} not mapped offline")
        return _local_model_dir(name_or_path, root)
    return name_or_path


def _patch_from_pretrained(monkeypatch, cls, root):
    original = cls.__dict__["from_pretrained"].__func__

    def from_pretrained(klass, name_or_path, *args, **kwargs):
        kwargs.pop("revision", None) if isinstance(name_or_path, str) and name_or_path in MODELS else None
        return original(klass, _resolve(name_or_path, root), *args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(from_pretrained))


# ------------------------------------------------------------------------------------------------ offline datasets
_PROMPTS = ["The sky is", "Water boils at", "The capital of France is", "Two plus two is", "Cats like to"]
_ANSWERS = [" blue.", " 100 degrees.", " Paris.", " four.", " sleep."]


def _zen(config_name: str):
    from datasets import Dataset

    n = len(_PROMPTS)
    rows = []
    for i in range(n * 4):
        p, a = _PROMPTS[i % n], _ANSWERS[i % n]
        user, assistant = {"role": "user", "content": p}, {"role": "assistant", "content": a.strip()}
        rows.append(
            {
                "standard_language_modeling": {"text": p + a},
                "standard_prompt_completion": {"prompt": p, "completion": a},
                "standard_prompt_only": {"prompt": p},
                "conversational_language_modeling": {"messages": [user, assistant]},
                "conversational_prompt_completion": {"prompt": [user], "completion": [assistant]},
                "conversational_prompt_only": {"prompt": [user]},
                "standard_implicit_prompt_preference": {"chosen": p + a, "rejected": p + " green."},
            }.get(config_name)
        )
    if rows[0] is None:
        pytest.skip(f"peer: dataset trl-internal-testing/zen config {config_name} not mapped offline")
    return Dataset.from_list(rows)


def _load_dataset(path, name=None, *, split=None, streaming=False, **kwargs):
    from datasets import DatasetDict

    if path != "trl-internal-testing/zen" or name is None:
        pytest.skip(f"peer: dataset {path} ({name}) not mapped offline")
    train = _zen(name)
    splits = DatasetDict({"train": train, "test": train.select(range(4))})
    if split is None:
        out = splits
    else:
        base, _, rest = split.partition("[")
        out = splits[base]
        if rest:
            stop = int(rest.rstrip("]").lstrip(":"))
            out = out.select(range(stop))
    if streaming:
        out = out.to_iterable_dataset() if split is not None else {k: v.to_iterable_dataset() for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------------------------ the swap
def _swap_names(monkeypatch, module):
    from trl_distill import CaMOPDConfig, CaMOPDTrainer, SCASConfig, SCASTrainer

    def PeerCaMOPDConfig(*args, rho=1.0, **kwargs):  # noqa: N802 (stands in for a class); a plain CaMOPDConfig
        return CaMOPDConfig(*args, rho=rho, **kwargs)

    swaps = {
        "SFTTrainer": SCASTrainer,
        "SFTConfig": SCASConfig,
        "DistillationTrainer": CaMOPDTrainer,
        "DistillationConfig": PeerCaMOPDConfig,
    }
    for name, ours in swaps.items():
        if hasattr(module, name):
            monkeypatch.setattr(module, name, ours)


def _swap_on(config) -> bool:
    return config.getoption("--peer-swap") or os.environ.get("PEER_SWAP") == "1"


@pytest.fixture(autouse=True)
def _peer_offline(request, monkeypatch, tmp_path_factory):
    if COPY not in Path(str(request.node.fspath)).parents:
        yield
        return
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    root = str(tmp_path_factory.getbasetemp() / "peer_models")
    classes = [
        transformers.PreTrainedModel,
        _BaseAutoModelClass,
        transformers.AutoConfig,
        transformers.PretrainedConfig,
        transformers.AutoTokenizer,
        transformers.PreTrainedTokenizerBase,
        transformers.AutoProcessor,
        transformers.ProcessorMixin,
    ]
    for cls in classes:
        if "from_pretrained" in cls.__dict__:
            _patch_from_pretrained(monkeypatch, cls, root)
    import torch

    if not torch.cuda.is_available():  # TRL's configs default to bf16, which TrainingArguments refuses on CPU
        post_init = transformers.TrainingArguments.__post_init__

        def cpu_post_init(self):
            self.bf16 = False
            post_init(self)

        monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", cpu_post_init)
    module = request.module
    if hasattr(module, "load_dataset"):
        monkeypatch.setattr(module, "load_dataset", _load_dataset)
    if _swap_on(request.config):
        _swap_names(monkeypatch, module)
    yield
