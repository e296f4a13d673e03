"""The tiny world: tokenizer, task splits and a cached base student, all built offline and deterministic."""

import os
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict

from ..core.generation import generate_completions
from .models import CACHE_VERSION, cache_dir, cached_model, pretrain, tiny_model
from .tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits, task_reward
from .tokenizer import load_or_build_tokenizer


@dataclass
class World:
    """Everything the demo, the lab and the recipes share.

    Args:
        seed (`int`): seed of the splits and of every model built from this world.
        domain (`DatasetDict`): arithmetic train/dev/test splits (the domain task).
        general (`DatasetDict`): string-operation train/dev/test splits (the general tasks).
    """

    seed: int = 0
    train_size: int = 4000
    eval_size: int = 200
    tokenizer: object = None
    domain: DatasetDict = None
    general: DatasetDict = None
    models: dict = field(default_factory=dict)

    def __post_init__(self):
        self.tokenizer = load_or_build_tokenizer(os.path.join(cache_dir(), f"tokenizer-v{CACHE_VERSION}"))
        sizes = {"train_size": self.train_size, "dev_size": self.eval_size, "test_size": self.eval_size}
        self.domain = make_task_splits(DOMAIN_TASKS, seed=self.seed, **sizes)
        self.general = make_task_splits(GENERAL_TASKS, seed=self.seed, **sizes)

    def model(self, name: str, data, size: str = "s", arch: str = "qwen2", steps: int = 600, lr: float = 3e-3):
        """A tiny model pre-trained on `data` for `steps`, cached on disk; returns `(model, path)`."""
        key = {
            "name": name,
            "size": size,
            "arch": arch,
            "steps": steps,
            "lr": lr,
            "seed": self.seed,
            "data": data._fingerprint,
        }

        def build():
            model = tiny_model(self.tokenizer, size, arch, seed=self.seed)
            pretrain(model, self.tokenizer, data, steps=steps, lr=lr, seed=self.seed, desc=f"pre-training {name}")
            return model

        return cached_model(self.tokenizer, key, build)

    def base_student(self, steps: int = 600):
        """The base student: a small Qwen2 briefly trained on the domain task (weak to medium accuracy)."""
        return self.model("base-student", self.domain["train"], steps=steps)


def accuracy(model, tokenizer, dataset, max_new_tokens: int = 48, batch_size: int = 64) -> float:
    """Greedy pass@1 of `model` on `dataset` by the world's verifier."""
    completions = generate_completions(model, tokenizer, dataset["prompt"], max_new_tokens, batch_size, desc="evaluating")
    rewards = task_reward(completions=completions, answer=dataset["answer"], task=dataset["task"])
    return sum(r or 0.0 for r in rewards) / len(rewards)


def demo(seed: int = 0, steps: int = 600) -> float:
    """Builds the world, trains (or loads) the base student and prints its held-out accuracy."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    world = World(seed=seed)
    model, path = world.base_student(steps=steps)
    acc = accuracy(model, world.tokenizer, world.domain["test"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"base student: {n_params / 1e6:.2f}M-parameter Qwen2, {steps} pre-training steps, cached at {path}")
    print(f"held-out accuracy on {len(world.domain['test'])} arithmetic problems: {acc:.1%}")
    return acc
