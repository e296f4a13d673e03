"""Experiment 4, CaMOPD: recovering the general ability of a domain-specialised student without losing the domain."""

from datasets import concatenate_datasets

from ...camopd.camopd_config import CaMOPDConfig
from ...camopd.camopd_trainer import CaMOPDTrainer
from ..world.tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits
from .common import (
    TASK_KWARGS,
    AccuracyCurve,
    Lab,
    Phase,
    accuracy,
    compare,
    fit,
    load,
    losses,
    summary,
    trainer_settings,
)


CLAIM = (
    "Decoupled alternating recovery/review steps with gap-based sample selection (CaMOPD) recover general ability "
    "while keeping the domain better than vanilla mixed multi-teacher on-policy distillation (MOPD)."
)


def models(lab: Lab, bar) -> dict:
    """The general model (trained on the general tasks and some arithmetic) and its arithmetic specialisation."""
    from ..world.models import pretrained_model

    p, tok = lab.preset, lab.tokenizer
    general = make_task_splits(GENERAL_TASKS, 1024, 1, 1, seed=300)["train"]
    domain = make_task_splits(DOMAIN_TASKS, 1024, 1, 1, seed=301, **TASK_KWARGS)["train"]
    mix = concatenate_datasets([general, domain]).shuffle(seed=0)
    general_path = pretrained_model(tok, "lab-general", mix, p.teacher_steps, p.size, seed=2)
    bar.update(1)
    specialised = pretrained_model(tok, "lab-specialised", domain, p.teacher_steps // 2, p.size, start=general_path)
    bar.update(1)
    return {"general": general_path, "specialised": specialised}


def run(lab: Lab, timings: dict) -> dict:
    p, tok = lab.preset, lab.tokenizer
    with Phase("CaMOPD: general model and its specialisation", 2, timings) as bar:
        paths = models(lab, bar)
    general = make_task_splits(GENERAL_TASKS, p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0)
    domain = make_task_splits(DOMAIN_TASKS, p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0, **TASK_KWARGS)
    review_every = max(1, min(4, p.onpolicy_steps // 4))
    methods_config = {
        "CaMOPD": ({"schedule": "alternating", "review_every": review_every, "rho": 0.5}, ("general", "domain")),
        "vanilla MOPD": ({"schedule": "mixed", "rho": 1.0}, ("general", "domain")),
        "general-only OPD": ({"schedule": "mixed", "rho": 1.0}, ("general",)),
    }
    start, teacher = {}, {}
    with Phase("CaMOPD: starting point", 4, timings) as bar:
        for name, split in (("general", general), ("domain", domain)):
            start[name] = accuracy(load(paths["specialised"]), tok, split["test"], p.max_new_tokens)
            teacher[name] = accuracy(load(paths["general"]), tok, split["test"], p.max_new_tokens)
            bar.update(2)
    results = {name: {"general": [], "domain": [], "mean": []} for name in methods_config}
    curves = {name: [] for name in methods_config}
    loss_curves = {name: [] for name in methods_config}
    with Phase("CaMOPD: recovery training", len(methods_config) * len(p.seeds), timings) as bar:
        for seed in p.seeds:
            for name, (config, sources) in methods_config.items():
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
                for key, value in (("general", g), ("domain", d), ("mean", (g + d) / 2)):
                    results[name][key].append(value)
                curves[name].append(curve.points)
                loss_curves[name].append(losses(trainer))
                bar.update(1)
    methods = {name: summary(r["mean"]) for name, r in results.items()}
    by_ability = {name: {k: summary(v) for k, v in r.items()} for name, r in results.items()}
    comparisons = [
        {"method": "CaMOPD", "baseline": "vanilla MOPD", **compare(methods["CaMOPD"], methods["vanilla MOPD"])},
        {
            "method": "CaMOPD",
            "baseline": "general-only OPD",
            **compare(methods["CaMOPD"], methods["general-only OPD"]),
        },
    ]
    verdict = comparisons[0]["verdict"]
    notes = [
        f"Specialised student before recovery: general {start['general']:.1%}, domain {start['domain']:.1%} (the "
        f"general teacher: general {teacher['general']:.1%}, domain {teacher['domain']:.1%}).",
        "After recovery (mean over seeds): "
        + "; ".join(
            f"{n} general {b['general']['mean']:.1%}, domain {b['domain']['mean']:.1%}" for n, b in by_ability.items()
        )
        + ".",
        f"Same budget: {p.onpolicy_steps} optimizer steps of {p.batch_size} trained samples (CaMOPD generates "
        f"{2 * p.batch_size} and keeps the largest-gap half; K = {review_every} recovery steps per review step).",
        "The verdict compares the mean of general and domain accuracy, CaMOPD against vanilla MOPD.",
    ]
    return {
        "title": "CaMOPD: counteraction-aware multi-teacher on-policy distillation",
        "claim": CLAIM,
        "metric": "mean of general and domain test accuracy",
        "methods": methods,
        "by_ability": by_ability,
        "start": start,
        "general_teacher": teacher,
        "comparisons": comparisons,
        "verdict": verdict,
        "curves": curves,
        "loss_curves": loss_curves,
        "notes": notes,
    }
