"""A DMC world designed from DMC's formula (issue 30, part 2), the lab's DMC experiment's world
(`experiments/dmc.py`, the `crossing` design), also measured by `python -m trl_distill.lab.probes dmc-stage` (`--claims`:
both claims where the precondition is met; docs/lab.md: the first design misses the precondition, `crossing` meets it).

The world is built from DMC's formula (issue 30). `DMC = Q / (1 + β(1 − C)L)` re-ranks two datasets only when one is
cleaner and harder (`Q_A > Q_B`, `L_A > L_B`) and the capability `C` crosses the point where the difficulty penalty
stops mattering: with `x = β(1 − C)`, `DMC_A > DMC_B` iff `x < (Q_A − Q_B) / (Q_B·L_A − Q_A·L_B)`. So:

- a student that starts weak and grows within one stage (`student_run`): pre-trained to compute the lab's arithmetic
  in the cot style, but only one solution in `ANSWER_EVERY` states its answer on an `Answer:` line, so its greedy
  answers rarely end with one (`C` ≈ 0 at step 0) while the working is mostly right; a stage of SFT on any candidate
  teaches it to state the answer it already computes, so `C` rises to near its hidden skill;
- candidates that trade quality against difficulty (`CANDIDATES`): the training prompts' reference solutions in an
  answer style (sets `L`: cot is the student's own, equation a new one-line format, verbose a longer new format) with a
  share of rows carrying an arithmetic slip that the final answer follows (sets `Q`), chosen so that the cheap noisy dataset leads while
  `C` ≈ 0 and the clean hard one leads once `C` is high (docs/lab.md has the arithmetic). Two designs
  (`DESIGNS`): `reversing`, the first, whose crossings (c* ≈ 0.6–0.7) one stage did not reach, and `crossing`, whose
  clean dataset is only just harder than the noisy one's penalty allows, so c* is low (≈ 0.36 at step 0).

The precondition is measured (`stage_precondition`) on checkpoints of a plain SFT run on the step-0 choice: the ranking at step 0 against the
ranking after the first stage (DMCCallback's reselection interval, one epoch of its candidates).
"""

import math
import random

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from ...dmc.compatibility import overtaking_capability, rank_datasets
from ...dmc.dmc_callback import CandidateDatasets, DMCCallback
from ..world.models import Pretraining
from ..world.tasks import make_task_splits, task_reward
from .common import TASK_KWARGS, Lab, Phase, accuracy, fit, load, seed_runs, trainer_settings
from .verdicts import compare, precondition, spearman, summary


COLUMNS = ["prompt", "completion", "answer", "task", "correct"]
# name -> (answer style, share of wrong rows): Q = 1 − share, L set by the style (see the module docstring).
# The first design: Q set so that the ranking reverses fully between C ≈ 0 and C ≈ 0.9 (docs/lab.md).
CANDIDATES = {
    "cot-noisy": ("cot", 0.6),
    "equation-noisy": ("equation", 0.4),
    "verbose-clean": ("verbose", 0.0),
}
# The crossing design: the clean equation set overtakes the noisy cot one at a low crossing capability. With Q_A = 1
# and Q_B = 1 − s, c* = 1 − s / ((1 − s)·L_A − L_B), which falls as L_A falls (A just harder than B's penalty allows)
# and as s grows; from the first design's step-0 L's (clean cot 0.155, slipped cot rows ≈ 0.84, equation 2.14), s = 0.47
# puts c* near 0.3: above C ≈ 0.06 at step 0, below the 0.38–0.56 one stage of SFT on cot reached (docs/lab.md).
CROSSING = {
    "cot-noisy": ("cot", 0.47),
    "equation-clean": ("equation", 0.0),
    "verbose-clean": ("verbose", 0.0),
}
DESIGNS = {"reversing": CANDIDATES, "crossing": CROSSING}
DMC_STUDENT_PROBLEMS = 1024  # distinct pre-training problems of the DMC student (as many as a teacher's)
ANSWER_EVERY = 8  # one pre-training solution in this many keeps its `Answer:` line


def student_data(problems: int = DMC_STUDENT_PROBLEMS) -> Dataset:
    """The DMC student's pre-training rows: cot solutions of `problems` problems, the `Answer:` line kept on one row in
    `ANSWER_EVERY` (the working alone on the others)."""
    rows = make_task_splits(("arithmetic",), problems, 1, 1, seed=400, style="cot", **TASK_KWARGS)["train"]

    def working_only(row, i):
        if i % ANSWER_EVERY == 0:
            return row
        body = row["completion"][0]["content"].rpartition("Answer: ")[0].rstrip("\n")
        return {"completion": [{"role": "assistant", "content": body}]}

    return rows.map(working_only, with_indices=True)


def student_run(lab: Lab) -> Pretraining:
    """The DMC student's pre-training: as long as the strongest teacher's (`teacher_steps`), the lab's size."""
    return Pretraining("lab-dmc-student", student_data(), lab.preset.teacher_steps, lab.preset.size, seed=1)


def pretraining(lab: Lab) -> list[Pretraining]:
    """The models this experiment needs pre-trained (`experiments.pretraining`): its student."""
    return [student_run(lab)]


def corrupted(rows: Dataset, share: float, seed: int, wrong_text) -> Dataset:
    """`rows` with `round(share · len(rows))` seeded rows rewritten by `wrong_text(text, answer, offset)` (`offset` a
    seeded error of 1 to 9 either way), and a `correct` column from the task's verifier."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share of wrong answers must be in [0, 1], got {share}.")
    rng = random.Random(seed)
    wrong = set(rng.sample(range(len(rows)), round(share * len(rows))))
    offsets = [rng.choice([d for d in range(-9, 10) if d]) for _ in range(len(rows))]

    def corrupt(row, i):
        if i not in wrong:
            return row
        text = wrong_text(row["completion"][0]["content"], row["answer"], offsets[i])
        return {"completion": [{"role": "assistant", "content": text}]}

    rows = rows.map(corrupt, with_indices=True)
    correct = task_reward(completions=rows["completion"], answer=rows["answer"], task=rows["task"])
    return rows.add_column("correct", [bool(c) for c in correct]).select_columns(COLUMNS)


def with_slips(rows: Dataset, share: float, seed: int = 0) -> Dataset:
    """`rows` with an arithmetic slip in `round(share · len(rows))` seeded rows: the last step's result is off by 1 to
    9 either way and the final answer follows it, as a careless teacher's would (its answer agrees with its own
    working; only the arithmetic is wrong), and a `correct` column from the task's verifier."""

    def slip(text, value, offset):
        slipped = str(int(value) + offset)
        working, _, _ = text.rpartition(f"Answer: {value}")
        head, _, tail = working.rpartition(f"={value}")  # the last step's result (or the equation's)
        return f"{head}={slipped}{tail}Answer: {slipped}"

    return corrupted(rows, share, seed, slip)


def with_wrong_answers(rows: Dataset, share: float, seed: int = 0) -> Dataset:
    """`rows` with the final answer of `round(share · len(rows))` seeded rows replaced by a wrong number (the correct
    one moved by 1 to 9 either way) while the working stays right, and a `correct` column from the task's verifier:
    the first design's noise (its answers disagree with their own working)."""

    def wrong_answer(text, value, offset):
        head, _, stated = text.rpartition("Answer: ")
        return f"{head}Answer: {int(stated) + offset}"

    return corrupted(rows, share, seed, wrong_answer)


NOISE = {"slips": with_slips, "answers": with_wrong_answers}


def candidate_datasets(lab: Lab, noise: str = "slips", design: str = "reversing") -> dict[str, Dataset]:
    """The candidates of `DESIGNS[design]` on the lab's training prompts (the same prompts in each,
    `teachers.domain_splits`' draw), their wrong rows made by `NOISE[noise]`."""
    if noise not in NOISE:
        raise ValueError(f"Unknown noise {noise!r}; choose one of {sorted(NOISE)}.")
    if design not in DESIGNS:
        raise ValueError(f"Unknown design {design!r}; choose one of {sorted(DESIGNS)}.")
    p, datasets = lab.preset, {}
    for k, (name, (style, share)) in enumerate(DESIGNS[design].items()):
        splits = make_task_splits(
            ("arithmetic",), p.pool_prompts, p.dev_prompts, p.eval_prompts, seed=0, style=style, **TASK_KWARGS
        )  # fmt: skip
        datasets[name] = NOISE[noise](splits["train"], share, seed=k)
    return datasets


def stage_steps(preset) -> int:
    """Optimizer steps of one stage: one epoch of DMCCallback's candidates (`pool_prompts` rows), its reselection
    interval."""
    return math.ceil(preset.pool_prompts / preset.batch_size)


def budget(preset) -> int:
    """Optimizer steps of every SFT run of this experiment: `dmc_epochs` stages."""
    return preset.dmc_epochs * stage_steps(preset)


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
    crossings = [crossing(table, top) for table in tables]
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


class RankAt(TrainerCallback):
    """Calls `measure(model)` when training reaches optimizer step `step` (a checkpoint of the run, measured in
    place), keeps the result in `.result`, and stops the run there when `stop`."""

    def __init__(self, step: int, measure, stop: bool = False):
        self.step, self.measure, self.stop, self.result = step, measure, stop, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            self.result = self.measure(model)
            control.should_training_stop = self.stop
        return control


def staged_ranking(lab: Lab, student: str, datasets: dict, dev: Dataset, top: str, seed: int) -> list[dict]:
    """`ranking` on the checkpoint after the first stage (`stage_steps`) of plain SFT of `student` on `top`, under the
    full budget's schedule (the run stops there)."""
    config = SFTConfig(**trainer_settings(lab, seed, max_steps=budget(lab.preset), max_length=128))
    trainer = SFTTrainer(load(student), args=config, train_dataset=datasets[top], processing_class=lab.tokenizer)
    at = RankAt(stage_steps(lab.preset), lambda model: ranking(lab, datasets, dev, model), stop=True)
    trainer.add_callback(at)
    fit(trainer)
    return at.result


def crossing(table: list[dict], top: str, beta: float = 1.0) -> dict[str, float | None]:
    """For each other dataset of a ranking `table`, the capability `C` above which it overtakes `top` under DMC's
    formula with the table's `Q` and `L` ([`overtaking_capability`]; `None`: never)."""
    rows = {row["dataset"]: (row["quality"], row["difficulty"]) for row in table}
    return {n: overtaking_capability(rows[top], qd, beta) for n, qd in rows.items() if n != top}


def table_text(table: list[dict]) -> str:
    """A ranking in one line: `C`, then each dataset's `Q`, `L` and DMC, best first."""
    return f"C {table[0]['capability']:.3f}: " + ", ".join(
        f"{r['dataset']} {r['dmc']:.3f} (Q {r['quality']:.3f}, L {r['difficulty']:.3f})" for r in table
    )


def ranking(lab: Lab, datasets: dict, dev: Dataset, model) -> list[dict]:
    """`rank_datasets` of every candidate (all rows, every dev prompt, β = 1) for `model` as it is now."""
    return rank_datasets(
        model, lab.tokenizer, datasets, dev, task_reward, probe_size=None, dev_size=None,
        max_new_tokens=lab.preset.max_new_tokens,
    )  # fmt: skip


def stage_precondition(step0: list[dict], staged: list[list[dict]], stage: int, top: str) -> dict:
    """The precondition from rankings at step 0 (`step0`) and after the first stage of plain SFT on the step-0 choice
    `top` (`staged`, one per seed): Spearman ρ between them, the top after the stage and the crossover capabilities.
    Met when the top changes on at least two seeds in three (reselecting then has something to find)."""
    names = [row["dataset"] for row in step0]
    dmc0 = {row["dataset"]: row["dmc"] for row in step0}
    rhos = []
    for table in staged:
        dmc = {row["dataset"]: row["dmc"] for row in table}
        rho = spearman([dmc0[n] for n in names], [dmc[n] for n in names])
        rhos.append(0.0 if math.isnan(rho) else rho)  # a constant side keeps no ranking: it moved
    rho = sum(rhos) / len(rhos)
    tops = [table[0]["dataset"] for table in staged]
    moved = sum(t != top for t in tops)
    return precondition(
        "Spearman ρ of the DMC ranking after the first stage against step 0",
        rho,
        "the top changes during the first stage on at least 2 seeds in 3",
        moved >= math.ceil(2 * len(staged) / 3),
        f"`rank_datasets` (β = 1) on the base student (step 0) and on the checkpoint after the first stage ({stage} "
        f"steps: one epoch of DMCCallback's candidates, its reselection interval) of plain SFT on the step-0 choice "
        f"({top}), per seed (mean ρ over {len(staged)} seeds): if the ranking does not move, reselecting has nothing "
        "to find.",
        detail=f"ρ per seed: {', '.join(f'{r:+.3f}' for r in rhos)}; top at step 0: {top}, after the first stage: "
        + ", ".join(tops)
        + f" (moved on {moved} of {len(staged)} seeds)"
        + f"; at step 0, {overtaking(top, [step0])}; after the first stage, {overtaking(top, staged)}",
    )


def claims(lab: Lab, student: str, datasets: dict, splits: dict, step0: list[dict], timings: dict) -> dict:
    """The two claims on this world, each seed of the preset, the same budget (`budget`) everywhere: plain SFT on each
    candidate (static: Spearman ρ of step-0 DMC against its mean test accuracy, the DMC pick against a random pick,
    the mean over candidates per seed), and DMCCallback reselecting every stage against selecting once and against the
    best static candidate (the one whose SFT ends best, an oracle pick). Also the callbacks' mixture weights per round.
    `timings` gets each phase's wall time."""
    p, names, steps = lab.preset, list(datasets), budget(lab.preset)
    dev, test = splits["dev"], splits["test"]
    with Phase("DMC: SFT per candidate", len(names) * len(p.seeds), timings) as bar:
        runs = seed_runs(lab, lambda r: sft_accuracy(lab, student, datasets[r[0]], test, r[1]), names, bar)
    candidates, every = candidate_slices(datasets, p.pool_prompts), {"DMCCallback static": 0, "DMCCallback dynamic": 1}
    with Phase("DMC: DMCCallback static and dynamic", 2 * len(p.seeds), timings) as bar:
        reselecting = seed_runs(
            lab, lambda r: reselecting_run(lab, student, candidates, dev, test, r[1], every[r[0]], steps), every, bar
        )
    runs.update({label: [acc for acc, _ in results] for label, results in reselecting.items()})
    weights = {label: [rounds for _, rounds in results] for label, results in reselecting.items()}  # per seed, round
    methods = {name: summary(values) for name, values in runs.items()}
    dmc0 = {row["dataset"]: row["dmc"] for row in step0}
    pick, best = step0[0]["dataset"], max(names, key=lambda n: methods[n]["mean"])
    methods["random candidate"] = summary([sum(runs[n][i] for n in names) / len(names) for i in range(len(p.seeds))])
    return {
        "methods": methods,
        "spearman": spearman([dmc0[n] for n in names], [methods[n]["mean"] for n in names]),
        "pick": pick,
        "best": best,
        "callback_weights": weights,
        "comparisons": [
            (pick, "random candidate", compare(methods[pick], methods["random candidate"])),
            ("DMCCallback dynamic", f"best static ({best})", compare(methods["DMCCallback dynamic"], methods[best])),
            (
                "DMCCallback dynamic",
                "DMCCallback static",
                compare(*(methods[f"DMCCallback {k}"] for k in ("dynamic", "static"))),
            ),
        ],
    }


def sft_accuracy(lab: Lab, student: str, dataset: Dataset, test: Dataset, seed: int) -> float:
    """Test accuracy after plain SFT of `student` on `dataset` for the experiment's budget."""
    trainer = sft_run(lab, student, dataset, seed, budget(lab.preset))
    return accuracy(trainer.model, lab.tokenizer, test, lab.preset.max_new_tokens)
