"""Experiment 1, SCAS: is the cheapest-to-learn verified answer a better teacher than the best teacher's answer?"""

from collections import Counter
from functools import partial

from ...scas.scas_config import SCASConfig
from ...scas.scas_trainer import SCASTrainer
from .common import Lab, Phase, accuracy, fit, load, losses, seed_runs, teacher_shares, trainer_settings
from .teachers import CAST_STEPS, cast
from .teachers import cast_pretraining as pretraining  # noqa: F401 (the models this experiment needs)
from .verdicts import above, compare, gated, precondition, summary


CLAIM = (
    "Choosing, per prompt, the verified teacher answer with the lowest learning cost for the current student (SCAS) "
    "beats SFT on the best teacher's answers."
)
METHODS = {
    "best teacher": {"selection_strategy": "best_teacher"},
    "random teacher": {"selection_strategy": "random"},
    "SCAS (once)": {"selection_strategy": "scas", "rescore_every": 0},
    "SCAS (each epoch)": {"selection_strategy": "scas", "rescore_every": 1},
}


def sft_run(lab: Lab, world: dict, run: tuple[str, int]) -> dict:
    """One SFT run of method `name` at `seed` (in a worker process): it returns what it measured, and the path of its
    model, saved on the first seed."""
    name, seed = run
    p = lab.preset
    config = SCASConfig(
        **trainer_settings(lab, seed, num_train_epochs=p.epochs, max_length=128),
        selection_seed=seed,
        scoring_batch_size=32,
        **METHODS[name],
    )
    trainer = SCASTrainer(
        load(world["student"]), args=config, train_dataset=world["pool"], processing_class=lab.tokenizer
    )
    fit(trainer)
    shares = teacher_shares(trainer)  # every selection round: share of each teacher
    saved = None
    if seed == p.seeds[0]:
        saved = lab.run_dir("student", name.replace(" ", "-"))
        trainer.model.save_pretrained(saved)
    return {
        "accuracy": accuracy(trainer.model, lab.tokenizer, world["splits"]["test"], p.max_new_tokens),
        "first_loss": losses(trainer)[0][1],
        "shares": shares,
        "saved": saved,
    }


def train_methods(lab: Lab, world: dict, timings: dict) -> dict[str, list[dict]]:
    """Every method's SFT runs over the seeds, the first seed's students kept in `lab.shared["students"]` (the
    quantification experiment traces them)."""
    # every run in one phase, so no worker idles between the precondition's runs and the others; the precondition's
    # (SFT on the best teacher's verified answers must improve the student over its base) start first and are judged
    # before any method is compared
    total = len(METHODS) * len(lab.preset.seeds)
    with Phase("SCAS: training (best-teacher SFT, the precondition, first)", total, timings) as bar:
        runs = seed_runs(lab, partial(sft_run, lab, world), list(METHODS), bar)
    for name, results in runs.items():
        for result in results:
            if result["saved"]:
                lab.shared.setdefault("students", {})[f"SFT on {name}"] = load(result["saved"])
    return runs


def scas_preconditions(lab: Lab, world: dict, best_teacher_accuracy: dict) -> list[dict]:
    """Every teacher beats the base student, and SFT on the best teacher's answers (`best_teacher_accuracy`, over
    seeds) improves it."""
    p, base, teacher_accuracy = lab.preset, world["student_accuracy"], world["teacher_accuracy"]
    gain = above(best_teacher_accuracy, base)
    weakest = min(teacher_accuracy, key=teacher_accuracy.get)
    return [
        precondition(
            "weakest teacher − base student (accuracy)",
            teacher_accuracy[weakest] - base,
            "> 0 (every teacher is better than the student)",
            teacher_accuracy[weakest] > base,
            "Each teacher's greedy accuracy on the training prompts against the base student's on the test prompts "
            "(both drawn from the same task): a teacher weaker than the student is not a teacher to distil from.",
            detail=f"weakest teacher: {weakest}",
        ),
        precondition(
            "best-teacher SFT − base student (test accuracy)",
            gain["difference"],
            f"> {gain['standard_error']:.3f} (one standard error of the SFT mean)",
            gain["verdict"] == "reproduced",
            f"SFTs the base student ({p.epochs} epochs) on the best teacher's verified answers, {len(p.seeds)} seeds, "
            f"against the base student's greedy accuracy on the same {p.eval_prompts} test prompts: SFT on good "
            "answers must help this student, or the choice of answer cannot matter.",
        ),
    ]


def scas_comparisons(methods: dict) -> tuple[list[dict], str]:
    """Both SCAS variants against both baselines, and the claim's verdict: `reproduced` when either variant beats the
    best teacher, else `inconclusive` when either is ahead by less than a standard error, else the per-epoch
    variant's."""
    comparisons = [
        {"method": m, "baseline": b, **compare(methods[m], methods[b])}
        for m in ("SCAS (once)", "SCAS (each epoch)")
        for b in ("best teacher", "random teacher")
    ]
    main = compare(methods["SCAS (each epoch)"], methods["best teacher"])
    once = compare(methods["SCAS (once)"], methods["best teacher"])
    verdict = "reproduced" if "reproduced" in (main["verdict"], once["verdict"]) else main["verdict"]
    if "reproduced" not in (main["verdict"], once["verdict"]) and "inconclusive" in (main["verdict"], once["verdict"]):
        verdict = "inconclusive"
    return comparisons, verdict


def scas_notes(lab: Lab, world: dict, shares: dict, first_loss: dict) -> list[str]:
    """The report's notes: the base student, the teachers, SCAS's choices and the cost of each method's answers."""
    pool, base = world["pool"], world["student_accuracy"]
    skipped = len(set(pool["prompt_id"])) - len({i for i, ok in zip(pool["prompt_id"], pool["correct"]) if ok})
    best = max(world["teacher_accuracy"], key=world["teacher_accuracy"].get)
    scas_top = max(shares["SCAS (once)"], key=shares["SCAS (once)"].get) if shares["SCAS (once)"] else None
    return [
        f"The base student (before SFT) scores {base:.1%}; {skipped} of {lab.preset.pool_prompts} prompts have no "
        "verified answer and are left out of every method's training set.",
        "Teacher accuracy on the training prompts: "
        + ", ".join(f"{t} {a:.0%}" for t, a in world["teacher_accuracy"].items())
        + f"; the best teacher is {best}.",
        f"SCAS chose {scas_top} most often (shares over rounds and seeds: "
        + ", ".join(f"{t} {s:.0%}" for t, s in shares["SCAS (once)"].items())
        + ")."
        + (" The strongest teacher was not the one SCAS preferred." if scas_top and scas_top != best else ""),
        "First logged training loss (mean over seeds), the cost of each method's answers to the base student: "
        + ", ".join(f"{name} {loss:.2f}" for name, loss in first_loss.items())
        + ".",
    ]


def run(lab: Lab, timings: dict) -> dict:
    """The experiment: the cast and its pool, every method's SFT runs, the preconditions, the comparisons."""
    with Phase("SCAS: teachers and pool", CAST_STEPS, timings) as bar:
        world = cast(lab, bar)
    runs = train_methods(lab, world, timings)
    methods = {name: summary([r["accuracy"] for r in results]) for name, results in runs.items()}
    preconditions = scas_preconditions(lab, world, methods["best teacher"])
    choices = {name: Counter() for name in runs}
    for name, results in runs.items():
        for result in results:
            choices[name].update(result["shares"])
    shares = {name: {t: v / max(1e-12, sum(c.values())) for t, v in sorted(c.items())} for name, c in choices.items()}
    lab.shared["student_teacher_shares"] = {f"SFT on {name}": share for name, share in shares.items()}
    comparisons, verdict = scas_comparisons(methods)
    # how costly the chosen answers are for the base student
    first_loss = {name: summary([r["first_loss"] for r in results])["mean"] for name, results in runs.items()}
    return {
        "title": "SCAS: student-centric answer selection",
        "claim": CLAIM,
        "metric": "test accuracy",
        "methods": methods,
        "comparisons": comparisons,
        "verdict": gated(verdict, preconditions),
        "preconditions": preconditions,
        "base_student_accuracy": world["student_accuracy"],
        "teacher_accuracy": world["teacher_accuracy"],
        "teacher_shares": shares,
        "first_loss": first_loss,
        "notes": scas_notes(lab, world, shares, first_loss),
    }
