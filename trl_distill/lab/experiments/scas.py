"""Experiment 1, SCAS: is the cheapest-to-learn verified answer a better teacher than the best teacher's answer?"""

from collections import Counter

from ...scas.scas_config import SCASConfig
from ...scas.scas_trainer import SCASTrainer
from .common import (
    Lab,
    Phase,
    above,
    accuracy,
    compare,
    each_seed,
    fit,
    gated,
    load,
    losses,
    precondition,
    summary,
    trainer_settings,
)
from .teachers import CAST_STEPS, cast
from .teachers import cast_pretraining as pretraining  # noqa: F401 (the models this experiment needs)


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


def run(lab: Lab, timings: dict) -> dict:
    p = lab.preset
    with Phase("SCAS: teachers and pool", CAST_STEPS, timings) as bar:
        world = cast(lab, bar)
    test = world["splits"]["test"]
    base = world["student_accuracy"]
    skipped = len(set(world["pool"]["prompt_id"])) - len(
        {i for i, ok in zip(world["pool"]["prompt_id"], world["pool"]["correct"]) if ok}
    )
    accuracies = {name: [] for name in METHODS}
    choices = {name: Counter() for name in METHODS}
    first_loss = {name: [] for name in METHODS}  # how costly the chosen answers are for the base student

    def train(run: tuple[str, int]) -> dict:
        """One SFT run (in a worker process: it returns what it measured, and the first seed's model saved)."""
        name, seed = run
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
        shares = Counter()
        for record in trainer.scas_callback.history:  # every selection round: share of each teacher
            for key, value in record["metrics"].items():
                if key.startswith("scas/teacher_share/"):
                    shares[key.split("/")[-1]] += value
        saved = None
        if seed == p.seeds[0]:
            saved = lab.run_dir("student", name.replace(" ", "-"))
            trainer.model.save_pretrained(saved)
        return {
            "accuracy": accuracy(trainer.model, lab.tokenizer, test, p.max_new_tokens),
            "first_loss": losses(trainer)[0][1],
            "shares": shares,
            "saved": saved,
        }

    def train_all(names: list[str], bar) -> None:
        for name, result in each_seed(lab, train, names, bar):
            accuracies[name].append(result["accuracy"])
            first_loss[name].append(result["first_loss"])
            choices[name].update(result["shares"])
            if result["saved"]:
                lab.shared.setdefault("students", {})[f"SFT on {name}"] = load(result["saved"])

    # every run in one phase, so no worker idles between the precondition's runs and the others; the precondition's
    # (SFT on the best teacher's verified answers must improve the student over its base) start first and are judged
    # before any method is compared
    with Phase(
        "SCAS: training (best-teacher SFT, the precondition, first)", len(METHODS) * len(p.seeds), timings
    ) as bar:
        train_all(list(METHODS), bar)
    gain = above(summary(accuracies["best teacher"]), base)
    weakest = min(world["teacher_accuracy"], key=world["teacher_accuracy"].get)
    preconditions = [
        precondition(
            "weakest teacher − base student (accuracy)",
            world["teacher_accuracy"][weakest] - base,
            "> 0 (every teacher is better than the student)",
            world["teacher_accuracy"][weakest] > base,
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
    methods = {name: summary(values) for name, values in accuracies.items()}
    shares = {name: {t: v / max(1e-12, sum(c.values())) for t, v in sorted(c.items())} for name, c in choices.items()}
    lab.shared["student_teacher_shares"] = {f"SFT on {name}": share for name, share in shares.items()}
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
    verdict = gated(verdict, preconditions)
    best = max(world["teacher_accuracy"], key=world["teacher_accuracy"].get)
    scas_top = max(shares["SCAS (once)"], key=shares["SCAS (once)"].get) if shares["SCAS (once)"] else None
    first_loss = {name: summary(v)["mean"] for name, v in first_loss.items()}
    notes = [
        f"The base student (before SFT) scores {base:.1%}; {skipped} of {p.pool_prompts} prompts have no verified answer "
        "and are left out of every method's training set.",
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
    return {
        "title": "SCAS: student-centric answer selection",
        "claim": CLAIM,
        "metric": "test accuracy",
        "methods": methods,
        "comparisons": comparisons,
        "verdict": verdict,
        "preconditions": preconditions,
        "base_student_accuracy": base,
        "teacher_accuracy": world["teacher_accuracy"],
        "teacher_shares": shares,
        "first_loss": first_loss,
        "notes": notes,
    }
