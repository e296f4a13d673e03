"""What every lab experiment shares: presets, cached tiny models, training settings, evaluation, and the runs over
seeds (the statistics and verdict rules are in `verdicts.py`)."""

import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback

from ...core.generation import generate_completions
from ..progress import bar, interactive
from ..world.tasks import task_reward
from ..world.tokenizer import load_or_build_tokenizer


@dataclass
class Preset:
    """The size of a lab run. `quick` is what the tests run; `default` is `make demo`.

    The `default` and `quick` presets' pre-trained models ship in the package (`python -m trl_distill.lab.ship`), so
    from an empty cache they pre-train nothing; a run ends with its per-phase timing table (docs/lab.md has today's).

    Args:
        name (`str`): the preset's name.
        seeds (`tuple[int, ...]`): seeds of every compared training run (at least 3 for mean ± std).
        size (`str`): size of every tiny model (see `trl_distill.lab.world.models.SIZES`).
        pool_prompts (`int`): training prompts (SCAS pool, DMC candidate datasets, OGLS-SD and CaMOPD prompts).
        eval_prompts (`int`): held-out prompts per accuracy measurement.
        dev_prompts (`int`): dev prompts (DMC capability, training curves).
        teacher_steps (`int`): pre-training steps of the strongest teacher (weaker ones get fractions of it).
        student_steps (`int`): pre-training steps of the base student.
        batch_size (`int`): per-device batch of every trainer.
        epochs (`int`): epochs of SCAS's SFT runs.
        dmc_epochs (`int`): epochs of DMC's SFT runs (its 7 runs per seed are most of `make demo`'s time).
        onpolicy_steps (`int`): optimizer steps of the on-policy runs (OGLS-SD, CaMOPD).
        identity_steps (`int`): SFT steps of each ICE student (its identity teacher is trained 1.5 times as long).
        max_new_tokens (`int`): generation budget of evaluation and rollouts.
        curve_every (`int`): steps between two points of a training curve.
    """

    name: str
    seeds: tuple = (0, 1, 2)
    size: str = "xs"
    pool_prompts: int = 64
    eval_prompts: int = 48
    dev_prompts: int = 8
    teacher_steps: int = 100
    student_steps: int = 100
    batch_size: int = 16
    epochs: int = 2
    dmc_epochs: int = 2
    onpolicy_steps: int = 8
    identity_steps: int = 20
    max_new_tokens: int = 48
    curve_every: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # the default test suite's smoke run of every experiment: same cached models as `quick`, far fewer steps
    "smoke": Preset(
        "smoke",
        seeds=(0, 1),
        eval_prompts=16,
        dev_prompts=4,
        epochs=1,
        dmc_epochs=1,
        onpolicy_steps=2,
        identity_steps=4,
        max_new_tokens=32,
        curve_every=1,
    ),  # fmt: skip
    # a smoke test of every trainer: its models are too briefly pre-trained for its verdicts to be evidence
    "quick": Preset("quick"),
    "default": Preset(
        "default",
        pool_prompts=512,
        eval_prompts=128,
        dev_prompts=32,
        teacher_steps=1000,
        student_steps=450,
        batch_size=16,
        epochs=8,
        dmc_epochs=4,
        onpolicy_steps=40,
        identity_steps=40,
        curve_every=10,
    ),
}
# tighter intervals for those who can wait: the default's world (same cached models), more seeds and test prompts
PRESETS["full"] = replace(PRESETS["default"], name="full", seeds=(0, 1, 2, 3, 4), eval_prompts=256)

# The domain task of the lab: two-step arithmetic on small numbers, so tiny models reach non-trivial accuracy.
TASK_KWARGS = {"steps": 2, "max_value": 9}


@dataclass
class Lab:
    """The state an experiment run shares: tokenizer, preset, output directory, and results kept for later phases.

    Args:
        preset ([`Preset`]): the run's size.
        output_dir (`str`): the report directory (scratch training output goes under `output_dir/_runs`).
        workers (`int`): worker processes for independent runs (the pre-training, and each phase's seeds and methods;
            one CPU thread each, `lab.parallel`).
        shared (`dict`): artefacts one experiment leaves for another (teachers, students), by name.
    """

    preset: Preset
    output_dir: str
    workers: int = 1
    tokenizer: object = None
    shared: dict = field(default_factory=dict)

    def __post_init__(self):
        self.tokenizer = load_or_build_tokenizer(tokenizer_dir())
        self.scratch = os.path.join(self.output_dir, "_runs")
        os.makedirs(self.scratch, exist_ok=True)

    def run_dir(self, *parts) -> str:
        return tempfile.mkdtemp(dir=self.scratch, prefix="-".join(str(p) for p in parts) + "-")

    def left_tokenizer(self):
        """A copy of the tokenizer padding on the left, as the on-policy trainers generate."""
        tokenizer = load_or_build_tokenizer(tokenizer_dir())
        tokenizer.padding_side = "left"
        return tokenizer


def tokenizer_dir() -> str:
    """The world's saved tokenizer, versioned with the model cache so a stale one is never reused."""
    from ..world.models import CACHE_VERSION, cache_dir

    return os.path.join(cache_dir(), f"tokenizer-v{CACHE_VERSION}")


def load(path: str):
    """A fresh copy of a cached model, in float32 on CPU."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def trainer_settings(lab: Lab, seed: int, **overrides) -> dict:
    """Keyword arguments shared by every trainer config of the lab (CPU, no saving, quiet, seeded)."""
    settings = {
        "output_dir": lab.run_dir("run", seed),
        "per_device_train_batch_size": lab.preset.batch_size,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
    }
    settings.update(overrides)
    return settings


def fit(trainer):
    """Trains quietly: the lab reports through its own bars and tables, not a printed dict per logging step."""
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


def answers(model, tokenizer, dataset: Dataset, max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy completions of `dataset`'s prompts."""
    return generate_completions(model, tokenizer, dataset["prompt"], max_new_tokens, batch_size, show_progress=False)


def accuracy(model, tokenizer, dataset: Dataset, max_new_tokens: int) -> float:
    """Greedy pass@1 of `model` on `dataset` by the tiny world's verifier (`task_reward`)."""
    completions = answers(model, tokenizer, dataset, max_new_tokens)
    rewards = task_reward(completions=completions, answer=dataset["answer"], task=dataset["task"])
    return sum(r or 0.0 for r in rewards) / len(rewards)


class AccuracyCurve(TrainerCallback):
    """Measures held-out accuracy every `every` optimizer steps (and at steps 0 and the end): a training curve."""

    def __init__(self, tokenizer, dataset: Dataset, every: int, max_new_tokens: int, name: str = "accuracy"):
        self.tokenizer, self.dataset, self.every, self.max_new_tokens = tokenizer, dataset, every, max_new_tokens
        self.name = name
        self.points: list[tuple[int, float]] = []

    def _measure(self, state, model):
        if not self.points or self.points[-1][0] != state.global_step:
            self.points.append((state.global_step, accuracy(model, self.tokenizer, self.dataset, self.max_new_tokens)))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._measure(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._measure(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._measure(state, model)


def losses(trainer) -> list[tuple[int, float]]:
    """The logged training losses `(step, loss)` of a finished trainer."""
    return [(log["step"], log["loss"]) for log in trainer.state.log_history if "loss" in log]


class Phase:
    """One phase of an experiment, its wall time recorded into `timings`.

    On a terminal it shows a live progress bar over the phase's steps; otherwise (CI logs, `make demo > log`) the bar
    is silent and the phase prints one line when it ends.
    """

    def __init__(self, name: str, total: int, timings: dict):
        self.name, self.total, self.timings = name, total, timings

    def __enter__(self):
        self.start = time.perf_counter()
        self.bar = bar(total=self.total, desc=self.name, leave=True, dynamic_ncols=True)
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()
        seconds = round(time.perf_counter() - self.start, 2)
        self.timings[self.name] = seconds
        if not interactive():
            print(f"{self.name}: {'failed after' if exc[0] else 'done in'} {seconds:.1f} s", flush=True)
        return False


def each_seed(lab: Lab, train, names, bar, seeds=None) -> list[tuple[str, object]]:
    """`(name, train((name, seed)))` for every name and every seed (the preset's unless `seeds` is given), in that
    order, the runs side by side in `lab.workers` worker processes (`lab.parallel.parallel_map`: `train` returns what
    it measured); `bar` counts them."""
    from ..parallel import parallel_map

    runs = [(name, seed) for name in names for seed in (lab.preset.seeds if seeds is None else seeds)]
    results = parallel_map(train, runs, lab.workers, lambda _: bar.update(1))
    return [(name, result) for (name, _), result in zip(runs, results)]


def seed_runs(lab: Lab, train, names, bar, seeds=None) -> dict[str, list]:
    """[`each_seed`]'s results grouped by name: `{name: [train((name, seed)) for each seed]}`, in the order of
    `names`."""
    runs = {name: [] for name in names}
    for name, result in each_seed(lab, train, names, bar, seeds):
        runs[name].append(result)
    return runs


def pretrain_all(lab: Lab, runs, timings: dict) -> None:
    """Builds every model of `runs` ([`~trl_distill.lab.world.models.Pretraining`]) that is not cached yet: first
    the package's shipped ones (copied into the cache, one phase), then, as a second phase, pre-trains the others
    `lab.workers` at a time; the experiments then find them all in the cache.

    Records the start-up before it (imports, tokenizer and the world's data, since `lab.progress` was first imported)
    as the timing `Lab: start-up (imports, world data)`."""
    from ..progress import STARTED
    from ..world.models import prebuild

    timings["Lab: start-up (imports, world data)"] = round(time.perf_counter() - STARTED, 2)
    todo = [run for run in {run.path: run for run in runs}.values() if not run.cached()]
    shipped = [run for run in todo if run.shipped()]
    trained = [run for run in todo if not run.shipped()]
    for name, group in (("Lab: copying the shipped models", shipped), ("Lab: pre-training every model", trained)):
        if group:
            with Phase(name, len(group), timings) as bar:
                prebuild(lab.tokenizer, group, lab.workers, on_done=lambda bar=bar: bar.update(1))


def clean_scratch(lab: Lab) -> None:
    """Removes the scratch training directories (nothing is saved there, but trainers create them)."""
    shutil.rmtree(lab.scratch, ignore_errors=True)


def teacher_shares(trainer, per_round: bool = False) -> Counter:
    """Each teacher's share of the answers a finished `SCASTrainer` trained on (its `scas/teacher_share/<teacher>`
    metrics), summed over the selection rounds, or their mean over the rounds with `per_round`."""
    history = trainer.scas_callback.history
    rounds = len(history) if per_round else 1
    shares = Counter()
    for record in history:
        for key, value in record["metrics"].items():
            if key.startswith("scas/teacher_share/"):
                shares[key.split("/")[-1]] += value / rounds
    return shares
