"""Experiment 2, DMC, on the world designed from DMC's formula (`dmc_formula`, its `crossing` design): first the
precondition (the ranking at step 0 against the ranking after the first stage of plain SFT), then the two claims
apart: static DMC predicts which candidate gives the better student, and reselecting by DMC during training beats the
best static candidate at the same step budget."""

import math

from .common import Lab, Phase, accuracy, each_seed, load
from .dmc_formula import (
    budget,
    candidate_datasets,
    claims,
    ranking,
    stage_precondition,
    stage_steps,
    staged_ranking,
    student_run,
    table_text,
)
from .dmc_formula import pretraining as pretraining  # noqa: F401 (the models this experiment needs: its student)
from .teachers import domain_splits
from .verdicts import combined_verdict, gated, summary


CLAIM = (
    "Static: DMC measured before training ranks the candidate datasets as the accuracy of SFT on each does (Spearman "
    "ρ > 0.5), and its pick beats a random candidate. Dynamic: reselecting by DMC during training (DMCCallback) beats "
    "the best static candidate at the same step budget."
)
DESIGN = "crossing"  # `dmc_formula.DESIGNS`: the design whose crossing capability one stage reaches (docs/lab.md)


def step0(lab: Lab, timings: dict) -> dict:
    """The world at step 0: the student, the splits, the candidates, their ranking and the student's test accuracy."""
    p = lab.preset
    with Phase("DMC: step-0 compatibility", 1, timings) as bar:
        student, splits = student_run(lab).build(lab.tokenizer), domain_splits(lab)
        datasets = candidate_datasets(lab, design=DESIGN)
        table = ranking(lab, datasets, splits["dev"], load(student))
        base = accuracy(load(student), lab.tokenizer, splits["test"], p.max_new_tokens)
        bar.update(1)
    return {"student": student, "splits": splits, "datasets": datasets, "ranking": table, "base": base}


def first_stage(lab: Lab, world: dict, timings: dict) -> list[list[dict]]:
    """The ranking after the first stage of plain SFT on the step-0 choice, one per seed."""
    top, dev = world["ranking"][0]["dataset"], world["splits"]["dev"]
    with Phase("DMC: precondition (first stage of SFT)", len(lab.preset.seeds), timings) as bar:
        runs = each_seed(
            lab, lambda r: staged_ranking(lab, world["student"], world["datasets"], dev, top, r[1]), [top], bar
        )
    return [table for _, table in runs]


def claim_verdicts(out: dict, preconditions: list[dict]) -> dict[str, str]:
    """Each claim's verdict, gated on the precondition: static (the pick beats a random candidate and ρ > 0.5) and
    dynamic (reselection beats the best static candidate)."""
    pick, dynamic = out["comparisons"][0][2], out["comparisons"][1][2]
    rho = out["spearman"]
    correlated = "reproduced" if not math.isnan(rho) and rho > 0.5 else "not reproduced"
    return {
        "static": gated(combined_verdict([pick["verdict"], correlated]), preconditions),
        "dynamic": gated(dynamic["verdict"], preconditions),
        "both": gated(combined_verdict([pick["verdict"], correlated, dynamic["verdict"]]), preconditions),
    }


def notes(world: dict, staged: list[list[dict]], out: dict, verdicts: dict, seed: int) -> list[str]:
    """The report's lines under the table: each claim's verdict, ρ, the rankings and the reselection's weights."""
    rho = out["spearman"]
    rounds = " | ".join(
        ", ".join(f"{n} {w:.2f}" for n, w in r.items()) for r in out["callback_weights"]["DMCCallback dynamic"][0]
    )
    return [
        f"Static claim (DMC predicts the better student): {verdicts['static']}. Spearman ρ of step-0 DMC against the "
        f"mean accuracy of SFT on each of {len(world['datasets'])} candidates: "
        + ("undefined (a constant side)" if math.isnan(rho) else f"{rho:+.2f}")
        + f" (counted when > 0.5); DMC picks {out['pick']}, SFT ends best on {out['best']}.",
        f"Dynamic claim (reselection beats the best static candidate, {out['best']}, an oracle pick): "
        f"{verdicts['dynamic']}.",
        f"Step 0 ({world['ranking'][0]['dataset']} first), {table_text(world['ranking'])}.",
        "After the first stage of SFT on it, per seed: " + "; ".join(table_text(t) for t in staged) + ".",
        f"DMCCallback dynamic's mixture weights per round (seed {seed}): {rounds}.",
    ]


def run(lab: Lab, timings: dict) -> dict:
    """The experiment: the step-0 ranking, the precondition on the first stage of plain SFT, then both claims at
    `budget` steps everywhere (SFT per candidate, DMCCallback selecting once and reselecting every stage)."""
    p = lab.preset
    world = step0(lab, timings)
    staged = first_stage(lab, world, timings)
    top = world["ranking"][0]["dataset"]
    preconditions = [stage_precondition(world["ranking"], staged, stage_steps(p), top)]
    out = claims(lab, world["student"], world["datasets"], world["splits"], world["ranking"], timings)
    verdicts = claim_verdicts(out, preconditions)
    names, methods = list(world["datasets"]), out["methods"]
    order = ["random candidate", *names, "DMCCallback static", "DMCCallback dynamic"]
    dmc0 = {row["dataset"]: row["dmc"] for row in world["ranking"]}
    return {
        "title": "DMC: data–model compatibility",
        "claim": CLAIM,
        "metric": "test accuracy",
        "methods": {name: methods[name] for name in order},
        "comparisons": [{"method": m, "baseline": b, **c} for m, b, c in out["comparisons"][:2]],
        "reference_lines": ["DMCCallback static"],
        "verdict": verdicts["both"],
        "claims": {"static": verdicts["static"], "dynamic": verdicts["dynamic"]},
        "preconditions": preconditions,
        "design": DESIGN,
        "budget_steps": budget(p),
        "stage_steps": stage_steps(p),
        "base_student_accuracy": world["base"],
        "random_dataset_spread": summary([methods[n]["mean"] for n in names]),
        "spearman": out["spearman"],
        "pick": out["pick"],
        "best_static": out["best"],
        "ranking": world["ranking"],
        "first_stage_rankings": staged,
        "scatter": [{"dataset": n, "dmc": dmc0[n], "accuracy": methods[n]} for n in names],
        "callback_weights": out["callback_weights"],
        "notes": notes(world, staged, out, verdicts, p.seeds[0]),
    }
