"""Experiment 4, CaMOPD: recovering the general ability of a domain-specialised student without losing the domain."""

from functools import partial

import torch
from datasets import concatenate_datasets

from ...camopd.camopd_config import CaMOPDConfig
from ...camopd.camopd_trainer import CaMOPDTrainer
from ...camopd.gap import gap
from ...core.divergence import LMHead
from ...core.logprobs import SequenceBatch, encode_prompt_completion, last_hidden_states, token_logprobs_from_hidden
from ..world.models import Pretraining
from ..world.tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits
from .common import (
    TASK_KWARGS,
    AccuracyCurve,
    Lab,
    Phase,
    accuracy,
    answers,
    fit,
    load,
    losses,
    seed_runs,
    trainer_settings,
)
from .verdicts import above, compare, gated, precondition, summary


CLAIM = (
    "Decoupled alternating recovery/review steps with gap-based sample selection (CaMOPD) recover general ability "
    "while keeping the domain better than vanilla mixed multi-teacher on-policy distillation (MOPD)."
)


# general rows mixed into the specialisation (a share of its domain rows): the specialised student keeps part of its
# general ability, so on-policy distillation from the general teacher has answers to correct (without any it stayed
# at 0% general accuracy after recovery: nothing to recover from)
GENERAL_REPLAY = 0.25


def model_runs(lab: Lab) -> dict:
    """The pre-training runs of the general model (trained on the general tasks only) and of its arithmetic
    specialisation.

    The general model never saw arithmetic, so the specialised student's domain ability is recent and held only by
    the weights the specialisation moved: recovering general ability alone pulls those weights back (the
    counteraction CaMOPD balances). Measured in the precondition, not assumed.
    """
    p = lab.preset
    general = make_task_splits(GENERAL_TASKS, 1024, 1, 1, seed=300)["train"]
    domain = make_task_splits(DOMAIN_TASKS, 1024, 1, 1, seed=301, **TASK_KWARGS)["train"]
    general_run = Pretraining("lab-general", general, p.teacher_steps, p.size, seed=2)
    replay = general.select(range(int(GENERAL_REPLAY * len(domain))))
    specialised = concatenate_datasets([domain, replay]).shuffle(seed=0)
    return {
        "general": general_run,
        "specialised": Pretraining(
            "lab-specialised", specialised, p.teacher_steps // 2, p.size, start=general_run.path
        ),
    }


def models(lab: Lab, bar) -> dict:
    """The general model and its specialisation (paths), built unless cached ([`model_runs`])."""
    paths = {}
    for name, run in model_runs(lab).items():
        paths[name] = run.build(lab.tokenizer)
        bar.update(1)
    return paths


@torch.no_grad()
def sample_gaps(student, teacher, tokenizer, dataset, max_new_tokens: int, batch_size: int = 32) -> list[float]:
    """CaMOPD's per-sample gap (`camopd.gap.gap`) of `teacher` against `student` on the student's greedy answers."""
    completions = answers(student, tokenizer, dataset, max_new_tokens)
    features = [
        encode_prompt_completion(tokenizer, prompt, [{"role": "assistant", "content": text}])
        for prompt, text in zip(dataset["prompt"], completions)
    ]
    gaps = []
    for start in range(0, len(features), batch_size):
        batch = SequenceBatch.collate(features[start : start + batch_size], tokenizer.pad_token_id)
        mask = batch.completion_mask.clone()
        mask[:, 0] = 0
        logprobs = [
            token_logprobs_from_hidden(last_hidden_states(m, batch), LMHead.of(m), batch.input_ids, mask)
            for m in (student, teacher)
        ]
        gaps += gap(logprobs[0], logprobs[1], mask).tolist()
    return gaps


def quantile(values: list[float], q: float) -> float:
    """The `q`-quantile of `values` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def recovery_setup(lab: Lab, timings: dict) -> dict:
    """The general model and its specialisation (`paths`), the general and domain splits, and each compared method's
    `CaMOPDConfig` fields and teacher sources (`configs`)."""
    p = lab.preset
    with Phase("CaMOPD: general model and its specialisation", 2, timings) as bar:
        paths = models(lab, bar)
    review_every = max(1, min(4, p.onpolicy_steps // 4))
    return {
        "paths": paths,
        "general": make_task_splits(GENERAL_TASKS, p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0),
        "domain": make_task_splits(DOMAIN_TASKS, p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0, **TASK_KWARGS),
        "review_every": review_every,
        "configs": {
            "CaMOPD": ({"schedule": "alternating", "review_every": review_every, "rho": 0.5}, ("general", "domain")),
            "vanilla MOPD": ({"schedule": "mixed", "rho": 1.0}, ("general", "domain")),
            "general-only OPD": ({"schedule": "mixed", "rho": 1.0}, ("general",)),
        },
    }


def starting_point(lab: Lab, setup: dict, timings: dict) -> tuple[dict, dict]:
    """General and domain test accuracy of the specialised student (the start) and of the general teacher."""
    p, paths = lab.preset, setup["paths"]
    start, teacher = {}, {}
    with Phase("CaMOPD: starting point", 4, timings) as bar:
        for name in ("general", "domain"):
            test = setup[name]["test"]
            start[name] = accuracy(load(paths["specialised"]), lab.tokenizer, test, p.max_new_tokens)
            teacher[name] = accuracy(load(paths["general"]), lab.tokenizer, test, p.max_new_tokens)
            bar.update(2)
    return start, teacher


def recovery_run(lab: Lab, setup: dict, run: tuple[str, int]) -> dict:
    """One recovery run (in a worker process): what it measured."""
    name, seed = run
    p, tok, paths, general, domain = lab.preset, lab.tokenizer, setup["paths"], setup["general"], setup["domain"]
    config, sources = setup["configs"][name]
    curve = AccuracyCurve(tok, general["dev"], p.curve_every, p.max_new_tokens)
    args = CaMOPDConfig(
        **trainer_settings(lab, seed, max_steps=p.onpolicy_steps, learning_rate=5e-4),
        max_completion_length=p.max_new_tokens, temperature=1.0, beta=1.0, **config,
    )  # fmt: skip
    teachers = {"general": load(paths["general"]), "domain": load(paths["specialised"])}
    trainer = CaMOPDTrainer(
        load(paths["specialised"]),
        teacher_model={s: teachers[s] for s in sources},
        args=args,
        train_dataset={"general": general["train"], "domain": domain["train"]}
        if len(sources) > 1
        else {"general": general["train"]},
        processing_class=lab.left_tokenizer(),
        callbacks=[curve],
    )
    fit(trainer)
    g = accuracy(trainer.model, tok, general["test"], p.max_new_tokens)
    d = accuracy(trainer.model, tok, domain["test"], p.max_new_tokens)
    logs = trainer.state.log_history
    return {
        "accuracy": {"general": g, "domain": d, "mean": (g + d) / 2},
        "curve": curve.points,
        "losses": losses(trainer),
        # the steps that drew domain prompts only (the trainer logs a source's gap on the steps it drew that source)
        "review_steps": [log["step"] for log in logs if "gap/domain" in log and "gap/general" not in log],
    }


def camopd_preconditions(lab: Lab, start: dict, general_only: dict, gaps: dict) -> list[dict]:
    """General-only OPD recovers general ability and costs the domain (`general_only`: its accuracies over seeds,
    by ability); the spread of the per-sample `gaps` is printed."""
    recovered = above(general_only["general"], start["general"])
    hurt = above(general_only["domain"], start["domain"])
    every_gap = gaps["general"] + gaps["domain"]
    gap_stat = summary(every_gap)
    return [
        precondition(
            "general-only OPD: general accuracy after − before",
            recovered["difference"],
            f"> {recovered['standard_error']:.3f} (one standard error of the mean after)",
            recovered["verdict"] == "reproduced",
            f"The same general-only runs: general test accuracy against the specialised student's "
            f"({start['general']:.3f}). On-policy distillation from the general teacher must recover general ability, "
            "or there is no recovery for CaMOPD to balance against the domain.",
        ),
        precondition(
            "general-only OPD: domain accuracy after − before",
            hurt["difference"],
            f"< −{hurt['standard_error']:.3f} (one standard error of the mean after)",
            -hurt["difference"] > hurt["standard_error"],
            f"On-policy distillation of the specialised student from the general teacher on general prompts only, "
            f"{len(lab.preset.seeds)} seeds, same budget; domain test accuracy against the specialised student's "
            f"({start['domain']:.3f}): if the domain never falls, there is no counteraction to balance.",
        ),
        precondition(
            "spread (std over samples) of the per-sample teacher–student gap",
            gap_stat["std"],
            "printed, no threshold",
            None,
            "CaMOPD's gap (mean |log T − log S| over tokens, `camopd.gap.gap`) of the general teacher against the "
            f"specialised student on its greedy answers to the {len(every_gap)} general and domain training prompts: "
            "gap-based selection needs samples that differ in how much correction they need.",
            detail=f"mean {gap_stat['mean']:.3f}, 10th–90th percentile {quantile(every_gap, 0.1):.3f}–"
            f"{quantile(every_gap, 0.9):.3f}; mean on general prompts {summary(gaps['general'])['mean']:.3f}, "
            f"on domain prompts {summary(gaps['domain'])['mean']:.3f}",
        ),
    ]


def by_ability(results: list[dict]) -> dict[str, dict]:
    """One method's accuracies over seeds ([`summary`]), by ability (`general`, `domain` and their `mean`)."""
    return {key: summary([r["accuracy"][key] for r in results]) for key in ("general", "domain", "mean")}


def camopd_notes(lab: Lab, setup: dict, start: dict, teacher: dict, abilities: dict) -> list[str]:
    """The report's notes: the starting point, each method's abilities after recovery, the budget, the verdict's
    metric."""
    p = lab.preset
    return [
        f"Specialised student before recovery: general {start['general']:.1%}, domain {start['domain']:.1%} (the "
        f"general teacher: general {teacher['general']:.1%}, domain {teacher['domain']:.1%}).",
        "After recovery (mean over seeds): "
        + "; ".join(
            f"{n} general {b['general']['mean']:.1%}, domain {b['domain']['mean']:.1%}" for n, b in abilities.items()
        )
        + ".",
        f"Same budget: {p.onpolicy_steps} optimizer steps of {p.batch_size} trained samples (CaMOPD generates "
        f"{2 * p.batch_size} and keeps the largest-gap half; K = {setup['review_every']} recovery steps per review "
        "step).",
        "The verdict compares the mean of general and domain accuracy, CaMOPD against vanilla MOPD.",
    ]


def run(lab: Lab, timings: dict) -> dict:
    """The experiment: the models and their starting point, the preconditions (general-only OPD and the gaps first),
    CaMOPD and vanilla MOPD, the comparisons."""
    p, tok = lab.preset, lab.tokenizer
    setup = recovery_setup(lab, timings)
    start, teacher = starting_point(lab, setup, timings)
    train = partial(recovery_run, lab, setup)
    # the preconditions first: recovering general ability alone costs the domain, and samples need unequal correction
    with Phase("CaMOPD: precondition (general-only OPD, gaps)", len(p.seeds) + 1, timings) as bar:
        runs = seed_runs(lab, train, ("general-only OPD",), bar)
        specialised, general_teacher = load(setup["paths"]["specialised"]), load(setup["paths"]["general"])
        gaps = {
            source: sample_gaps(specialised, general_teacher, tok, setup[source]["train"], p.max_new_tokens)
            for source in ("general", "domain")
        }
        bar.update(1)
    preconditions = camopd_preconditions(lab, start, by_ability(runs["general-only OPD"]), gaps)
    with Phase("CaMOPD: recovery training", 2 * len(p.seeds), timings) as bar:
        runs.update(seed_runs(lab, train, ("CaMOPD", "vanilla MOPD"), bar))
    runs = {name: runs[name] for name in setup["configs"]}
    abilities = {name: by_ability(results) for name, results in runs.items()}
    methods = {name: ability["mean"] for name, ability in abilities.items()}
    comparisons = [
        {"method": "CaMOPD", "baseline": baseline, **compare(methods["CaMOPD"], methods[baseline])}
        for baseline in ("vanilla MOPD", "general-only OPD")
    ]
    return {
        "title": "CaMOPD: counteraction-aware multi-teacher on-policy distillation",
        "claim": CLAIM,
        "metric": "mean of general and domain test accuracy",
        "methods": methods,
        "by_ability": abilities,
        "start": start,
        "base_student": (start["general"] + start["domain"]) / 2,
        "general_teacher": teacher,
        "comparisons": comparisons,
        "verdict": gated(comparisons[0]["verdict"], preconditions),
        "preconditions": preconditions,
        "review_steps": {name: [r["review_steps"] for r in results] for name, results in runs.items()},
        "curves": {name: [r["curve"] for r in results] for name, results in runs.items()},
        "loss_curves": {name: [r["losses"] for r in results] for name, results in runs.items()},
        "notes": camopd_notes(lab, setup, start, teacher, abilities),
    }


def pretraining(lab: Lab) -> list:
    """The models this experiment needs pre-trained: the general model and its specialisation."""
    return list(model_runs(lab).values())
