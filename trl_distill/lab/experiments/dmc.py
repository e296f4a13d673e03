"""Experiment 2, DMC: does data–model compatibility at step 0 predict which dataset distils best, and does dynamic
reselection by DMC help?"""

import math

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from ...dmc.compatibility import overtaking_capability, rank_datasets
from ...dmc.dmc_callback import CandidateDatasets, DMCCallback
from ..world.tasks import task_reward
from .common import Lab, Phase, accuracy, each_seed, fit, load, trainer_settings
from .teachers import CAST_STEPS, cast
from .teachers import cast_pretraining as pretraining  # noqa: F401 (the models this experiment needs)
from .verdicts import compare, gated, precondition, spearman, summary


CLAIM = (
    "DMC measured before training correlates with the accuracy reached after SFT on each candidate dataset; choosing "
    "the dataset by DMC beats a random choice; reselecting by DMC during training beats selecting once."
)
COLUMNS = ["prompt", "completion", "answer", "task", "correct"]


def candidate_datasets(world: dict) -> dict[str, Dataset]:
    """One candidate dataset per teacher (its answers, right or wrong, to every training prompt) and the references."""
    pool = world["pool"]
    datasets = {}
    for teacher in world["teachers"]:
        datasets[teacher] = pool.filter(lambda row, t=teacher: row["teacher"] == t).select_columns(COLUMNS)
    datasets["reference"] = verified(world["splits"]["train"])
    return datasets


def verified(references: Dataset) -> Dataset:
    """Reference solutions as a DMC candidate: every row correct, DMC's columns."""
    return references.add_column("correct", [True] * len(references)).select_columns(COLUMNS)


def budget(preset) -> int:
    """Optimizer steps of every SFT run of this experiment: `dmc_epochs` passes over the pool."""
    return preset.dmc_epochs * math.ceil(preset.pool_prompts / preset.batch_size)


def sft_run(lab: Lab, student: str, dataset: Dataset, seed: int, steps: int):
    """The trainer after `steps` optimizer steps of plain SFT of `student` on `dataset` (the lab's settings)."""
    args = SFTConfig(**trainer_settings(lab, seed, max_steps=steps, max_length=128))
    return fit(SFTTrainer(load(student), args=args, train_dataset=dataset, processing_class=lab.tokenizer))


def candidate_slices(datasets: dict[str, Dataset], rows: int) -> CandidateDatasets:
    """DMCCallback's candidates: a slice of every dataset, `rows` in all, so one epoch over the candidates is one pass
    over the prompts (the same budget as SFT on one dataset)."""
    share = max(1, rows // len(datasets))
    return CandidateDatasets(
        {
            name: d.select(range(k * share, min(len(d), (k + 1) * share)))
            for k, (name, d) in enumerate(datasets.items())
        }
    )


def reselecting_run(lab: Lab, student: str, candidates, dev, test, seed: int, reselect_every: int, steps: int):
    """Test accuracy after `steps` of SFT of `student` under a DMCCallback (mixture, every dev prompt and candidate row,
    reselecting every `reselect_every` epochs; 0: once), and the mixture weights of each of its rounds."""
    args = SFTConfig(**trainer_settings(lab, seed, max_steps=steps, max_length=128))
    trainer = SFTTrainer(
        load(student), args=args, train_dataset=candidates.train_dataset, processing_class=lab.tokenizer
    )
    callback = DMCCallback(
        candidates, dev, task_reward, trainer=trainer, strategy="mixture", reselect_every=reselect_every,
        probe_size=None, dev_size=None, max_new_tokens=lab.preset.max_new_tokens,
    )  # fmt: skip
    trainer.add_callback(callback)
    fit(trainer)
    rounds = [log for log in trainer.state.log_history if "dmc/capability" in log]
    weights = [{n: r[f"dmc/{n}/weight"] for n in candidates.names} for r in rounds]
    return accuracy(trainer.model, lab.tokenizer, test, lab.preset.max_new_tokens), weights


def overtaking(top: str, tables: list[list[dict]]) -> str:
    """In words, from tables measured at the last epoch (one per seed): the capability `C` at which each other dataset
    would overtake `top` under DMC's formula (`overtaking_capability`, with L as measured then), and the `C` reached."""
    reached = ", ".join(f"{table[0]['capability']:.3f}" for table in tables)
    crossings = []
    for table in tables:
        rows = {row["dataset"]: (row["quality"], row["difficulty"]) for row in table}
        crossings.append({n: overtaking_capability(rows[top], qd) for n, qd in rows.items() if n != top})
    if all(c is None for seed in crossings for c in seed.values()):
        return f"no other dataset has a higher quality Q than {top}, so no capability C lets one overtake it (C reached: {reached})"
    per_seed = (
        ", ".join(f"{n} at C > {c:.3f}" for n, c in seed.items() if c is not None) or "none" for seed in crossings
    )
    return (
        f"capability at which another dataset would overtake {top}{', per seed' if len(tables) > 1 else ''}: "
        + "; ".join(per_seed)
        + f" (C reached: {reached})"
    )


def ranking(lab: Lab, datasets: dict[str, Dataset], dev: Dataset, model) -> tuple[list, dict[str, float]]:
    """`rank_datasets` of every candidate (all rows, every dev prompt) for `model` as it is now, and DMC by name."""
    table = rank_datasets(
        model, lab.tokenizer, datasets, dev, task_reward, probe_size=None, dev_size=None,
        max_new_tokens=lab.preset.max_new_tokens,
    )  # fmt: skip
    return table, {row["dataset"]: row["dmc"] for row in table}


def sft_per_dataset(lab: Lab, world: dict, datasets: dict[str, Dataset], top: str, timings: dict) -> dict:
    """Test accuracy after SFT on each dataset, per seed; DMC re-measured after SFT on the step-0 choice `top` (per
    seed: does the ranking move?) and, on the first seed, after SFT on each dataset (which one does training make
    first?)."""
    p, splits, steps = lab.preset, world["splits"], budget(lab.preset)
    names = list(datasets)
    per_dataset, final_tables, after_sft = {name: [] for name in names}, [], {}

    def sft(run: tuple[str, int]) -> tuple[float, tuple | None]:
        name, seed = run
        trainer = sft_run(lab, world["student"], datasets[name], seed, steps)
        final = ranking(lab, datasets, splits["dev"], trainer.model) if name == top or seed == p.seeds[0] else None
        return accuracy(trainer.model, lab.tokenizer, splits["test"], p.max_new_tokens), final

    with Phase("DMC: SFT per dataset (and the precondition)", len(names) * len(p.seeds), timings) as bar:
        for name, (acc, final) in each_seed(lab, sft, names, bar):
            first_seed = len(per_dataset[name]) == 0
            per_dataset[name].append(acc)
            if name == top:
                final_tables.append(final[0])
            if first_seed:
                difficulty = next(row["difficulty"] for row in final[0] if row["dataset"] == name)
                after_sft[name] = {"top": final[0][0]["dataset"], "difficulty": difficulty}
    return {"per_dataset": per_dataset, "final_tables": final_tables, "after_sft": after_sft}


def ranking_precondition(dmc: dict[str, float], final_tables: list[list[dict]], top: str, preset) -> dict:
    """The precondition: Spearman ρ of the DMC ranking after the full budget of SFT on `top` against step 0, per seed
    (mean ρ); a ranking that never moves leaves reselection nothing to find."""
    names = list(dmc)
    final_rankings = [{row["dataset"]: row["dmc"] for row in table} for table in final_tables]
    moved = [spearman([dmc[n] for n in names], [final[n] for n in names]) for final in final_rankings]
    moved = [0.0 if math.isnan(rho) else rho for rho in moved]  # a constant side keeps no ranking: it moved
    final_tops = [max(names, key=lambda n: final[n]) for final in final_rankings]
    rank_rho = sum(moved) / len(moved)
    return precondition(
        "Spearman ρ of the DMC ranking at the last epoch against step 0",
        rank_rho,
        "< 1 (the ranking changes during training)",
        rank_rho < 1.0 - 1e-9,
        f"`rank_datasets` on the base student (step 0), and again on the student after the full budget ({budget(preset)} "
        f"steps) of SFT on the step-0 choice ({top}), per seed (mean ρ over {len(preset.seeds)} seeds): if the "
        "ranking never moves, reselecting during training has nothing to find.",
        detail=f"top dataset at step 0: {top}; at the last epoch, per seed: "
        + ", ".join(final_tops)
        + "; "
        + overtaking(top, final_tables),
    )


def callback_runs(lab: Lab, world: dict, datasets: dict[str, Dataset], timings: dict) -> tuple[dict, dict]:
    """Test accuracy, per seed, of DMCCallback selecting once (`static`) and reselecting every epoch (`dynamic`) at the
    experiment's budget, and each run's mixture weights per round."""
    dynamic = {"DMCCallback static": 0, "DMCCallback dynamic": 1}
    callback_acc, callback_weights = {name: [] for name in dynamic}, {name: [] for name in dynamic}
    candidates, splits = candidate_slices(datasets, lab.preset.pool_prompts), world["splits"]

    def reselecting(run: tuple[str, int]) -> tuple[float, list]:
        label, seed = run
        return reselecting_run(
            lab, world["student"], candidates, splits["dev"], splits["test"], seed, dynamic[label], budget(lab.preset)
        )

    with Phase("DMC: DMCCallback static and dynamic", len(dynamic) * len(lab.preset.seeds), timings) as bar:
        for label, (acc, weights) in each_seed(lab, reselecting, dynamic, bar):
            callback_acc[label].append(acc)
            callback_weights[label].append(weights)
    return callback_acc, callback_weights


def claims_verdict(comparisons: list[dict], rho: float, preconditions: list[dict]) -> str:
    """Both comparisons and the correlation (ρ > 0.5) reproduced, some of them, or none; gated on the precondition."""
    correlated = not math.isnan(rho) and rho > 0.5
    verdicts = [c["verdict"] for c in comparisons] + ["reproduced" if correlated else "not reproduced"]
    verdict = (
        "reproduced" if all(v == "reproduced" for v in verdicts)
        else "partly reproduced" if "reproduced" in verdicts
        else "not reproduced"
    )  # fmt: skip
    return gated(verdict, preconditions)


def notes(table: list[dict], rho: float, after_sft: dict, names: list[str], seed: int) -> list[str]:
    """The report's lines under the table: the correlation, the step-0 ranking, and DMC after SFT on each dataset."""
    top = table[0]["dataset"]
    step0_difficulty = {row["dataset"]: row["difficulty"] for row in table}
    return [
        f"Spearman correlation between step-0 DMC and post-SFT accuracy over {len(names)} datasets: "
        + ("undefined (a constant side)" if math.isnan(rho) else f"{rho:+.2f}")
        + (" (counted as reproduced when > 0.5)."),
        f"DMC ranks {top} first (quality Q, difficulty L at step 0): "
        + ", ".join(f"{r['dataset']} {r['dmc']:.3f} (Q {r['quality']:.3f}, L {r['difficulty']:.3f})" for r in table)
        + ".",
        f"DMC re-measured after SFT on each dataset (seed {seed}, same budget): "
        + ", ".join(
            f"trained on {n} → {after_sft[n]['top']} first (L of {n} {step0_difficulty[n]:.3f} → "
            f"{after_sft[n]['difficulty']:.3f})"
            for n in names
        )
        + f"; {sum(after_sft[n]['top'] == n for n in names)} of {len(names)} datasets rank first after SFT on them.",
    ]


def run(lab: Lab, timings: dict) -> dict:
    """The experiment: the cast's candidate datasets ranked at step 0, SFT on each (and the precondition), DMCCallback
    static and dynamic, then the claims, gated on the precondition."""
    p = lab.preset
    with Phase("DMC: teachers and pool", CAST_STEPS, timings) as bar:
        world = cast(lab, bar)
        bar.update(CAST_STEPS - bar.n)
    datasets = candidate_datasets(world)
    names = list(datasets)
    with Phase("DMC: step-0 compatibility", 1, timings) as bar:
        table, dmc = ranking(lab, datasets, world["splits"]["dev"], load(world["student"]))
        bar.update(1)
    top = max(names, key=lambda n: dmc[n])
    sft = sft_per_dataset(lab, world, datasets, top, timings)
    per_dataset = sft["per_dataset"]
    preconditions = [ranking_precondition(dmc, sft["final_tables"], top, p)]
    callback_acc, callback_weights = callback_runs(lab, world, datasets, timings)

    accuracy_by_dataset = {name: summary(v) for name, v in per_dataset.items()}
    rho = spearman([dmc[n] for n in names], [accuracy_by_dataset[n]["mean"] for n in names])
    selected = summary(per_dataset[top])
    random_choice = summary([sum(per_dataset[n][i] for n in names) / len(names) for i in range(len(p.seeds))])
    methods = {"random dataset": random_choice, f"DMC-selected ({top})": selected}
    methods.update({label: summary(v) for label, v in callback_acc.items()})
    comparisons = [
        {"method": f"DMC-selected ({top})", "baseline": "random dataset", **compare(selected, random_choice)},
        {
            "method": "DMCCallback dynamic",
            "baseline": "DMCCallback static",
            **compare(methods["DMCCallback dynamic"], methods["DMCCallback static"]),
        },
    ]
    return {
        "title": "DMC: data–model compatibility",
        "claim": CLAIM,
        "metric": "test accuracy",
        "methods": methods,
        "comparisons": comparisons,
        "verdict": claims_verdict(comparisons, rho, preconditions),
        "preconditions": preconditions,
        "base_student_accuracy": world["student_accuracy"],
        "random_dataset_spread": summary([accuracy_by_dataset[n]["mean"] for n in names]),
        "spearman": rho,
        "ranking": table,
        "scatter": [{"dataset": n, "dmc": dmc[n], "accuracy": accuracy_by_dataset[n]} for n in names],
        "callback_weights": callback_weights,
        "top_after_sft": sft["after_sft"],
        "notes": notes(table, rho, sft["after_sft"], names, p.seeds[0]),
    }
