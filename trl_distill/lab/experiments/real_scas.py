"""The real-model experiment (`trl-distill lab --real`, not part of `make demo`): SCAS on SmolLM2-135M-Instruct.

The pool is built by code, not by a model: two-step arithmetic prompts (`What is 37 + 45 - 18?`), each answered in four
answer styles that are all correct by construction and verified (`last_number_reward`), so the styles differ only in
how they write the same solution. The precondition measures what SCAS relies on: whether the styles differ in
learning cost for this student (`scas_scores`) and how often each is SCAS's pick (`scas_select`). Then `SCASTrainer`
trains the student on one answer per prompt chosen by `best_teacher`, `random` and `scas` at the same budget, over
several seeds, and the report gives held-out accuracy and completion NLL, with the base model's numbers.
"""

import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ...core.checkpoints import fetch_checkpoint
from ...core.generation import generate_completions
from ...core.verifiers import completion_text
from ...scas.scas_config import SCASConfig
from ...scas.scas_trainer import SCASTrainer
from ...scas.scoring import scas_scores
from ...scas.selection import scas_select
from ..parallel import parallel_map
from .common import Lab, Phase, fit, losses, seed_runs, teacher_shares, trainer_settings
from .verdicts import compare, gated, precondition, summary


MODEL = "smollm2-135m-instruct"
CLAIM = (
    "On a real student (SmolLM2-135M-Instruct), training on the verified answer with the lowest learning cost for it "
    "(SCAS) beats training on the best teacher's answers."
)
STYLES = ("terse", "cot", "verbose", "numbered")
# All four styles are verified correct (accuracy 100% each), so accuracy cannot name a best teacher; the best teacher
# is the chain-of-thought answer, the form a strong teacher writes for arithmetic (the working, then the answer).
# `SCASTrainer`'s `best_teacher` strategy breaks the accuracy tie by name and picks it too; the report checks that.
BEST_TEACHER = "cot"
METHODS = {
    "best teacher (cot)": {"selection_strategy": "best_teacher"},
    "random style": {"selection_strategy": "random"},
    "SCAS": {"selection_strategy": "scas", "rescore_every": 0},
}


@dataclass
class RealPreset:
    """The size of a `--real` run (2 CPU cores: `default` within 15 minutes; docs/lab.md says how to scale it up).

    Args:
        name (`str`): the preset's name.
        seeds (`tuple[int, ...]`): seeds of every training run (selection draws, data order).
        pool_prompts (`int`): training prompts (four candidate answers each).
        eval_prompts (`int`): held-out prompts (accuracy, and the references whose NLL is measured).
        epochs (`int`): epochs over one answer per prompt.
        batch_size (`int`): per-device batch.
        learning_rate (`float`): peak learning rate (cosine, 5% warm-up).
        max_length (`int`): tokens per training sequence (SmolLM2's default system prompt included: 128 keeps every
            verbose answer whole).
        max_new_tokens (`int`): greedy generation budget of the accuracy measurement.
    """

    name: str
    seeds: tuple = (0, 1)
    pool_prompts: int = 48
    eval_prompts: int = 32
    epochs: int = 4
    batch_size: int = 8
    learning_rate: float = 1e-4
    max_length: int = 128
    max_new_tokens: int = 64

    def to_dict(self) -> dict:
        # the report's header reads these keys of a preset
        return {**asdict(self), "size": "SmolLM2-135M-Instruct (real)"}


REAL_PRESETS = {
    "smoke": RealPreset(
        "real-smoke", seeds=(0,), pool_prompts=4, eval_prompts=4, epochs=1, batch_size=4, max_new_tokens=16
    ),
    "default": RealPreset("real-default"),
    # for a GPU (docs/lab.md): ten times the prompts, three seeds, room for longer answers; not run on 2 CPU cores
    "full": RealPreset(
        "real-full", seeds=(0, 1, 2), pool_prompts=512, eval_prompts=256, epochs=3, batch_size=16, max_new_tokens=96
    ),
}


# --- the pool, built by code -----------------------------------------------------------------------------------------
def problems(n: int, seed: int) -> list[dict]:
    """`n` two-step problems `a ± b ± c` (two-digit `a`, `b`; `c` below 20; every partial result positive)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        a, b, c = rng.randint(10, 49), rng.randint(10, 49), rng.randint(2, 19)
        op1, op2 = rng.choice("+-"), rng.choice("+-")
        first = a + b if op1 == "+" else a - b
        result = first + c if op2 == "+" else first - c
        if first > 0 and result > 0:
            out.append({"a": a, "b": b, "c": c, "op1": op1, "op2": op2, "first": first, "answer": result})
    return out


def question(p: dict) -> str:
    return f"What is {p['a']} {p['op1']} {p['b']} {p['op2']} {p['c']}?"


def _words(op: str, x: int, y: int) -> str:
    return f"add {y} to {x}" if op == "+" else f"subtract {y} from {x}"


def answer(p: dict, style: str) -> str:
    """The answer to `p` in one of `STYLES`; every style ends with the line `Answer: <result>`."""
    a, b, c, op1, op2, first, r = (p[k] for k in ("a", "b", "c", "op1", "op2", "first", "answer"))
    if style == "terse":
        return f"Answer: {r}"
    if style == "cot":
        return f"{a} {op1} {b} = {first}, and {first} {op2} {c} = {r}.\nAnswer: {r}"
    if style == "verbose":
        return (
            f"Let's work this out carefully, one operation at a time. First, we {_words(op1, a, b)}, which gives "
            f"{first}. Then we {_words(op2, first, c)}, which gives {r}. So the value of the whole expression is "
            f"{r}.\nAnswer: {r}"
        )
    if style == "numbered":
        return f"1. {a} {op1} {b} = {first}\n2. {first} {op2} {c} = {r}\nAnswer: {r}"
    raise ValueError(f"Unknown answer style {style!r}; choose from {STYLES}.")


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the last number in the completion equals `answer` (TRL's reward-function form). Every pool style ends
    with its `Answer:` line, so for them it reads that line; for the base model, which writes no such line, it reads
    the number its working ends on."""
    rewards = []
    for completion, reference in zip(completions, answer):
        found = NUMBER.findall(completion_text(completion).replace(",", ""))
        rewards.append(float(bool(found) and float(found[-1]) == float(reference)))
    return rewards


def build_pool(items: list[dict], offset: int = 0) -> Dataset:
    """The long-form candidate pool: one row per prompt and style, `correct` set by `last_number_reward`."""
    rows = []
    for i, p in enumerate(items):
        for style in STYLES:
            rows.append(
                {
                    "prompt_id": offset + i,
                    "prompt": [{"role": "user", "content": question(p)}],
                    "completion": [{"role": "assistant", "content": answer(p, style)}],
                    "teacher": style,
                    "answer": str(p["answer"]),
                }
            )
    verified = last_number_reward([r["completion"] for r in rows], [r["answer"] for r in rows])
    if not all(verified):
        raise RuntimeError("An answer built by code failed its own verifier; the pool builder is wrong.")
    return Dataset.from_list([{**row, "correct": bool(ok)} for row, ok in zip(rows, verified)])


# --- measurements ----------------------------------------------------------------------------------------------------
def held_out_accuracy(model, tokenizer, items: list[dict], max_new_tokens: int) -> float:
    prompts = [[{"role": "user", "content": question(p)}] for p in items]
    completions = generate_completions(model, tokenizer, prompts, max_new_tokens, batch_size=32, show_progress=False)
    rewards = last_number_reward(completions, [p["answer"] for p in items])
    return sum(rewards) / len(rewards)


def style_nll(model, tokenizer, pool: Dataset) -> dict[str, float]:
    """Mean answer NLL (`d_A` of `scas_scores`: nats per answer token) of each style's held-out references."""
    scores = scas_scores(model, tokenizer, pool, batch_size=16)
    by_style: dict[str, list[float]] = {}
    for style, score in zip(pool["teacher"], scores):
        by_style.setdefault(style, []).append(score["d_A"])
    return {style: sum(v) / len(v) for style, v in by_style.items()}


def completion_nll(per_style: dict[str, float]) -> float:
    """The report's completion NLL: the mean over the four styles of their held-out references' mean answer NLL."""
    return sum(per_style[s] for s in STYLES) / len(STYLES)


# --- the experiment's steps -----------------------------------------------------------------------------------------
@dataclass
class RealSetup:
    """What every step of a run shares: the preset, the checkpoint and its tokenizer, and the data (one fixed problem
    set; the seeds vary the training).

    Args:
        preset ([`RealPreset`]): the run's size.
        model_dir (`str`): the student's checkpoint directory.
        tokenizer: its tokenizer.
        pool (`Dataset`): the training candidates ([`build_pool`]).
        test_items (`list[dict]`): the held-out problems (accuracy).
        test_pool (`Dataset`): their candidates in every style (per-style NLL).
    """

    preset: RealPreset
    model_dir: str
    tokenizer: object
    pool: Dataset
    test_items: list
    test_pool: Dataset

    @classmethod
    def build(cls, preset: RealPreset, model_dir: str) -> "RealSetup":
        items = problems(preset.pool_prompts + preset.eval_prompts, seed=1234)
        train_items, test_items = items[: preset.pool_prompts], items[preset.pool_prompts :]
        return cls(
            preset,
            model_dir,
            AutoTokenizer.from_pretrained(model_dir),
            build_pool(train_items),
            test_items,
            build_pool(test_items, offset=preset.pool_prompts),
        )

    def load(self):
        """A fresh copy of the student, in float32."""
        return AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)

    def evaluate(self, model) -> tuple[float, dict[str, float]]:
        """Held-out accuracy and the per-style NLL of the held-out references."""
        accuracy = held_out_accuracy(model, self.tokenizer, self.test_items, self.preset.max_new_tokens)
        return accuracy, style_nll(model, self.tokenizer, self.test_pool)


def measure_base(setup: RealSetup, what: str):
    """The base model's `scas_scores` of the pool (`what="scores"`), or its held-out accuracy and per-style NLL."""
    model = setup.load()
    if what == "scores":
        return scas_scores(model, setup.tokenizer, setup.pool, batch_size=16)
    return setup.evaluate(model)


def real_preconditions(setup: RealSetup, scores: list[dict]) -> tuple[list[dict], dict, dict]:
    """The styles differ in learning cost for this student, and SCAS's pick is not always the best teacher's style;
    also returns the mean learning cost per style and the share of SCAS's picks per style."""
    p, pool = setup.preset, setup.pool
    costs = {s: [] for s in STYLES}
    for style, score in zip(pool["teacher"], scores):
        costs[style].append(score["learning_cost"])
    mean_cost = {s: sum(v) / len(v) for s, v in costs.items()}
    picks = scas_select(pool, scores, strategy="scas", seed=p.seeds[0], warn=False)
    pick_share = {s: c / len(picks.indices) for s, c in Counter(pool["teacher"][i] for i in picks.indices).items()}
    pick_share = {s: pick_share.get(s, 0.0) for s in STYLES}
    cheapest, costliest = min(mean_cost, key=mean_cost.get), max(mean_cost, key=mean_cost.get)
    gaps = [hi - lo for hi, lo in zip(costs[costliest], costs[cheapest])]  # paired: the same prompts
    gap = summary(gaps)
    gap_se = gap["std"] / math.sqrt(gap["n"]) if gap["n"] > 1 else float("inf")
    not_best = 1.0 - pick_share[BEST_TEACHER]
    preconditions = [
        precondition(
            f"learning cost, costliest − cheapest style ({costliest} − {cheapest})",
            gap["mean"],
            f"> {gap_se:.3f} (one standard error of the paired per-prompt difference)",
            gap["mean"] > gap_se,
            f"`scas_scores` of the base model on all {len(pool)} candidates ({p.pool_prompts} prompts × "
            f"{len(STYLES)} styles, every one verified correct): the styles must differ in learning cost for this "
            "student, or SCAS has nothing to choose.",
            detail="mean learning cost per style: " + ", ".join(f"{s} {mean_cost[s]:.3f}" for s in STYLES),
        ),
        precondition(
            "share of prompts where SCAS's pick is not the best teacher's style",
            not_best,
            "> 0 (else SCAS trains on exactly the best teacher's answers)",
            not_best > 0,
            f"`scas_select` (strategy `scas`, seed {p.seeds[0]}) on the base model's scores: the style of each "
            f"prompt's pick, against the best teacher ({BEST_TEACHER}).",
            detail="SCAS's pick per style: " + ", ".join(f"{s} {pick_share[s]:.0%}" for s in STYLES),
        ),
    ]
    return preconditions, mean_cost, pick_share


def train_run(lab: Lab, setup: RealSetup, run: tuple[str, int]) -> dict:
    """One run (in a worker process): held-out accuracy, per-style NLL, the styles trained, the loss curve."""
    name, seed = run
    p = setup.preset
    settings = trainer_settings(
        lab, seed, num_train_epochs=p.epochs, per_device_train_batch_size=p.batch_size,
        learning_rate=p.learning_rate, max_length=p.max_length, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    config = SCASConfig(**settings, selection_seed=seed, scoring_batch_size=16, **METHODS[name])
    trainer = SCASTrainer(setup.load(), args=config, train_dataset=setup.pool, processing_class=setup.tokenizer)
    fit(trainer)
    accuracy, nll = setup.evaluate(trainer.model.eval())
    return {
        "accuracy": accuracy,
        "nll": nll,
        "shares": dict(teacher_shares(trainer, per_round=True)),
        "loss": losses(trainer),
        "steps": trainer.state.global_step,
    }


def per_style_means(runs: dict[str, list[dict]], key: str) -> dict[str, dict[str, float]]:
    """Per method, the mean over seeds of each style's `key` entry (`"nll"`, or `"shares"`: 0 where never trained)."""
    return {
        name: {s: sum(r[key].get(s, 0.0) for r in results) / len(results) for s in STYLES}
        for name, results in runs.items()
    }


def real_comparisons(methods: dict, nll: dict) -> list[dict]:
    """SCAS against both baselines, on accuracy and then on completion NLL."""
    comparisons = [
        {"method": "SCAS", "baseline": b, **compare(methods["SCAS"], methods[b])}
        for b in ("best teacher (cot)", "random style")
    ]
    comparisons += [  # lower is better: the difference is the baseline's NLL − SCAS's
        {"method": "SCAS (completion NLL)", "baseline": b, **compare(nll["SCAS"], nll[b], higher_is_better=False)}
        for b in ("best teacher (cot)", "random style")
    ]
    return comparisons


def real_notes(p: RealPreset, base: tuple, nll: dict, nll_by_style: dict, trained: dict, steps: int) -> list[str]:
    """The report's notes: the base model, completion NLL, the styles trained, and how accuracy and the budget are
    set."""
    base_accuracy, base_nll = base
    return [
        f"Base model (no training): held-out accuracy {base_accuracy:.3f}, completion NLL "
        f"{completion_nll(base_nll):.3f} (" + ", ".join(f"{s} {base_nll[s]:.3f}" for s in STYLES) + ").",
        "Completion NLL: the mean over the four styles of the held-out references' mean answer NLL (`d_A` of "
        "`scas_scores`, nats per token; lower is better), per method: "
        + "; ".join(f"{n} {fmt_stat(nll[n])}" for n in METHODS)
        + ". Per style (mean over seeds): "
        + "; ".join(f"{n}: " + ", ".join(f"{s} {v:.3f}" for s, v in nll_by_style[n].items()) for n in METHODS)
        + ".",
        "Styles trained (share of prompts, mean over seeds): "
        + "; ".join(f"{n}: " + ", ".join(f"{s} {v:.0%}" for s, v in trained[n].items()) for n in METHODS)
        + ".",
        f"Accuracy: greedy generation ({p.max_new_tokens} new tokens) on {p.eval_prompts} held-out prompts, correct "
        "when the last number of the completion is the answer. Same budget for every method: "
        f"{steps} optimizer steps of {p.batch_size} answers ({p.epochs} epochs over one answer per prompt, "
        f"{p.pool_prompts} prompts), lr {p.learning_rate:g}, max_length {p.max_length}; SCAS scored once, before "
        "training (`rescore_every=0`).",
    ]


def run(lab: Lab, timings: dict, preset: RealPreset | None = None, model_dir: str | None = None) -> dict:
    """The experiment: precondition, the three arms over `preset.seeds`, and the base model; returns the report entry."""
    p = preset or REAL_PRESETS["default"]
    setup = RealSetup.build(p, model_dir or fetch_checkpoint(MODEL))
    with Phase("Real SCAS: precondition (learning cost of each style) and base model", 2, timings) as bar:
        scores, base = parallel_map(partial(measure_base, setup), ["scores", "base"], lab.workers,
                                    lambda _: bar.update(1))  # fmt: skip
    preconditions, mean_cost, pick_share = real_preconditions(setup, scores)
    with Phase("Real SCAS: training and evaluation", len(METHODS) * len(p.seeds), timings) as bar:
        runs = seed_runs(lab, partial(train_run, lab, setup), list(METHODS), bar, seeds=p.seeds)
    methods = {name: summary([r["accuracy"] for r in results]) for name, results in runs.items()}
    nll = {name: summary([completion_nll(r["nll"]) for r in results]) for name, results in runs.items()}
    nll_by_style, trained = per_style_means(runs, "nll"), per_style_means(runs, "shares")
    comparisons = real_comparisons(methods, nll)
    return {
        "title": "Real SCAS: SmolLM2-135M-Instruct on code-built arithmetic answers",
        "claim": CLAIM,
        "metric": "held-out accuracy",
        "methods": methods,
        "comparisons": comparisons,
        "verdict": gated(comparisons[0]["verdict"], preconditions),
        "preconditions": preconditions,
        "secondary": {"metric": "completion NLL (lower is better)", "methods": nll, "base": completion_nll(base[1])},
        "base_student_accuracy": base[0],
        "base_nll": base[1],
        "mean_learning_cost": mean_cost,
        "scas_pick_share": pick_share,
        "trained_styles": trained,
        "nll_by_style": nll_by_style,
        "preset": p.to_dict(),
        "notes": real_notes(p, base, nll, nll_by_style, trained, runs["SCAS"][0]["steps"]),
    }


def fmt_stat(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"
