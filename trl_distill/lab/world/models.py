"""Tiny random-init causal LMs and a short pre-training routine, cached on disk by a hash of what made them."""

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ...core.checkpoints import cache_dir
from ...core.logprobs import SequenceBatch, encode_prompt_completion
from ..progress import bar


SIZES = {
    "xs": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    "s": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4},
    "m": {"hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 6},
    "l": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8},
}
ARCHS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
CACHE_VERSION = "4"  # bump when the tokenizer or pre-training recipe changes
# The default and quick presets' pre-trained models, shipped in the package (`python -m trl_distill.lab.world.ship`
# makes them): a read-only cache layer under the same `<name>-<digest>` entries, consulted before pre-training.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "lab_key.json")


def tiny_model(tokenizer, size: str = "s", arch: str = "qwen2", seed: int = 0, **overrides):
    """A random-init `Qwen2` or `Llama` causal LM of a named `size` (`xs`, `s`, `m`, `l`) for `tokenizer`."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; choose one of {sorted(SIZES)}.")
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; choose one of {sorted(ARCHS)}.")
    config_class, model_class = ARCHS[arch]
    settings = {
        "vocab_size": len(tokenizer),
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
        **SIZES[size],
    }
    config = config_class(**{**settings, **overrides})
    torch.manual_seed(seed)
    return model_class(config)


def pretrain(
    model,
    tokenizer,
    dataset: Dataset,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    desc: str = "pre-training",
) -> list[float]:
    """Trains `model` on `dataset`'s completions (prompt tokens masked) with AdamW and a cosine schedule.

    Returns the loss of every step. Deliberately a bare loop: the tiny world needs a fast, fixed recipe, not a
    trainer.
    """
    if len(dataset) == 0:
        raise ValueError("Cannot pre-train on an empty dataset.")
    features = [encode_prompt_completion(tokenizer, p, c) for p, c in zip(dataset["prompt"], dataset["completion"])]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))),
    )
    model.train()
    losses = []
    for _ in bar(range(steps), desc=desc, leave=False):
        batch = SequenceBatch.collate(rng.sample(features, min(batch_size, len(features))), tokenizer.pad_token_id)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        targets = batch.input_ids[:, 1:].masked_fill(batch.completion_mask[:, 1:] == 0, -100)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def model_path(key: dict) -> str:
    """The cache directory of the model made from `key` (built or not)."""
    digest = hashlib.sha256(json.dumps({**key, "v": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "models", f"{key.get('name', 'model')}-{digest}")


def cache_entry(path: str | None) -> str | None:
    """`path` as a cache key: a model in the cache by its entry's name (`models/<name>-<digest>`, the same wherever
    the cache lies), any other path as it is."""
    if path is None:
        return None
    models = os.path.join(os.path.abspath(cache_dir()), "models")
    path = os.path.abspath(path)
    return "cache:" + os.path.basename(path) if os.path.dirname(path) == models else path


def shipped_path(path: str) -> str | None:
    """The shipped copy of the cache entry `path` (same `<name>-<digest>`), or `None` when the package has none or
    `$TRL_DISTILL_SHIPPED_MODELS` is `0` (then every model is pre-trained, as `python -m
    trl_distill.lab.world.ship` does to make them)."""
    if os.environ.get("TRL_DISTILL_SHIPPED_MODELS", "1") == "0":
        return None
    shipped = os.path.join(SHIPPED_DIR, os.path.basename(path))
    return shipped if os.path.exists(os.path.join(shipped, "model.safetensors")) else None


def cached_model(tokenizer, key: dict, build) -> tuple[object, str]:
    """Loads the model cached under a hash of `key`, or makes it and saves it first: from the package's shipped copy
    of that entry ([`shipped_path`]) when there is one, else with `build()`.

    Returns the model and its directory (a normal `save_pretrained` directory with the tokenizer beside it).
    """
    path = model_path(key)
    if not os.path.exists(os.path.join(path, "config.json")):
        shipped = shipped_path(path)
        model = AutoModelForCausalLM.from_pretrained(shipped, dtype=torch.float32) if shipped else build()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(path))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        with open(os.path.join(staging, "lab_key.json"), "w") as f:
            json.dump(key, f, indent=1, sort_keys=True)
        try:
            os.rename(staging, path)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return AutoModelForCausalLM.from_pretrained(path), path


def data_key(dataset: Dataset) -> str:
    """A content hash of a dataset (stable across processes, unlike an in-memory fingerprint)."""
    payload = json.dumps(dataset.to_list(), sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class Pretraining:
    """One cached pre-training run (the arguments of [`pretrained_model`]), so that runs can be built ahead of use,
    several at once ([`prebuild`]).

    The cache key holds a hash of the data's content, so a changed task generator never reuses a stale model.
    `start` (a path) continues from a cached model instead of a random init (e.g. specialising a general model); a
    `start` inside the cache is keyed by its cache entry, not its absolute path, so a moved cache stays valid.
    """

    name: str
    data: Dataset
    steps: int
    size: str = "xs"
    seed: int = 0
    start: str | None = None
    lr: float = 3e-3
    arch: str = "qwen2"

    def __post_init__(self):
        self.key = {
            "name": self.name, "data": data_key(self.data), "steps": self.steps, "size": self.size, "seed": self.seed,
            "start": cache_entry(self.start), "lr": self.lr,
        }  # fmt: skip
        if self.arch != "qwen2":
            self.key["arch"] = self.arch
        self.path = model_path(self.key)

    def cost(self) -> float:
        """Pre-training work, roughly: steps × mean characters per row."""
        texts = [str(p) + str(c) for p, c in zip(self.data["prompt"], self.data["completion"])]
        return self.steps * sum(map(len, texts)) / len(texts)

    def cached(self) -> bool:
        return os.path.exists(os.path.join(self.path, "config.json"))

    def shipped(self) -> bool:
        """Whether the package ships this model ([`shipped_path`]): building it then trains nothing."""
        return shipped_path(self.path) is not None

    def build(self, tokenizer) -> str:
        """The model's directory, pre-training it first unless it is cached."""

        def make():
            if self.start is None:
                model = tiny_model(tokenizer, self.size, self.arch, seed=self.seed)
            else:
                model = AutoModelForCausalLM.from_pretrained(self.start)
            pretrain(
                model, tokenizer, self.data, steps=self.steps, batch_size=32, lr=self.lr, seed=self.seed,
                desc=f"pre-training {self.name}",
            )  # fmt: skip
            return model

        return cached_model(tokenizer, self.key, make)[1]


def pretrained_model(
    tokenizer,
    name: str,
    data: Dataset,
    steps: int,
    size: str = "xs",
    seed: int = 0,
    start: str | None = None,
    lr: float = 3e-3,
    arch: str = "qwen2",
) -> str:
    """A tiny model pre-trained on `data` for `steps` (batch 32) with [`pretrain`], cached on disk; returns its path
    (see [`Pretraining`])."""
    return Pretraining(name, data, steps, size, seed, start, lr, arch).build(tokenizer)


def prebuild(tokenizer, runs, workers: int = 1, on_done=None) -> int:
    """Builds every run of `runs` ([`Pretraining`]) that is not cached yet: the shipped ones first, here (a copy, no
    training), then the others `workers` at a time in one-thread worker processes
    ([`~trl_distill.lab.parallel.parallel_map`]: the same models as one after the other). A run that continues from
    another's model (`start`) is built after it, in the same worker. Returns how many were built; `on_done()` follows
    each."""
    from ..parallel import parallel_map

    pending = {run.path: run for run in runs if not run.cached()}
    shipped = [run for run in pending.values() if run.shipped()]
    for run in shipped:
        run.build(tokenizer)
        if on_done is not None:
            on_done()
    pending = {path: run for path, run in pending.items() if not run.cached()}
    after = {path: [] for path in pending}
    for run in pending.values():
        if run.start in pending:
            after[run.start].append(run)

    def chain(run) -> list:
        return [run] + [later for child in after[run.path] for later in chain(child)]

    chains = [chain(run) for run in pending.values() if run.start not in pending]
    # costliest first (steps × characters per row: the tokenizer has one token per byte), so the workers end together
    chains.sort(key=lambda runs: -sum(run.cost() for run in runs))

    def built(paths: list) -> None:
        for _ in paths if on_done is not None else ():
            on_done()

    parallel_map(lambda runs: [run.build(tokenizer) for run in runs], chains, workers, on_done=built)
    return len(shipped) + len(pending)
