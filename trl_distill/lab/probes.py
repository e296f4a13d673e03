"""Probes of the lab's world: the one-off measurements docs/lab.md's world table quotes, as commands.

    python -m trl_distill.lab.probes students --problems 256 320 384
    python -m trl_distill.lab.probes sft --problems 256 --styles cot explained verbose equation --seeds 0 1
    python -m trl_distill.lab.probes difficulty --problems 256 --styles cot verbose --problem_steps 2 3
    python -m trl_distill.lab.probes dmc --train cot-medium --max_values 10 11 --seeds 0 1
    python -m trl_distill.lab.probes dmc --train cot-medium --without reference
    python -m trl_distill.lab.probes dmc --train verbose-strong --student_styles cot verbose explained equation
    python -m trl_distill.lab.probes dmc-stage --seeds 0 1 2
    python -m trl_distill.lab.probes dmc-stage --seeds 0 1 2 --noise answers
    python -m trl_distill.lab.probes dmc-stage --seeds 0 1 2 --design crossing --claims

No method is compared here: they measure the properties of the world the preconditions need (how strong a base
student is, whether SFT on answers of a style helps it, how hard a dataset is for it). The student is the lab's own
recipe (`experiments.teachers.student_data`) on a given number of pre-training problems; the datasets are reference
solutions of the lab's arithmetic task (`world.tasks`) written in a given style. Each prints one line per measurement.
`dmc` measures the lab's first DMC candidates (the cast's answers, `cast_candidates`); `dmc-stage` the world designed
from DMC's formula (`experiments.dmc_formula`: its student and `DESIGNS`; the lab's DMC experiment runs its `crossing`
design), the precondition at step 0 and after the first stage.
"""

import argparse
import itertools

import torch
from datasets import concatenate_datasets
from trl import SFTConfig, SFTTrainer

from ..dmc.compatibility import rank_datasets, relative_difficulty
from .experiments.common import PRESETS, TASK_KWARGS, Lab, accuracy, fit, load, trainer_settings
from .experiments.teachers import STUDENT_PROBLEMS, student_data
from .progress import silence_other_bars
from .world.models import pretrained_model
from .world.tasks import STYLES, make_task_splits, task_reward


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trl_distill.lab.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=("students", "sft", "difficulty", "dmc", "dmc-stage"), help="what to measure")
    parser.add_argument(
        "--train",
        nargs="+",
        default=["cot-medium"],
        help="dmc: the lab's DMC candidate datasets to SFT on, one by one",
    )
    parser.add_argument(
        "--without", nargs="+", default=[], help="dmc: candidate datasets left out of the ranking (e.g. reference)"
    )
    parser.add_argument(
        "--student_styles",
        nargs="+",
        choices=STYLES,
        help="dmc: start from a student pre-trained (`--student_steps`) on the first `--problems` count of problems, "
        "shared among these answer styles, instead of the lab's cot student",
    )
    parser.add_argument(
        "--noise",
        choices=("slips", "answers"),
        default="slips",
        help="dmc-stage: how a candidate's wrong rows are wrong (an arithmetic slip the answer follows, or a wrong "
        "final answer under right working)",
    )
    parser.add_argument(
        "--design",
        choices=("reversing", "crossing"),
        default="reversing",
        help="dmc-stage: the candidates (`dmc_formula.DESIGNS`): the first design, or the low-crossing one",
    )
    parser.add_argument(
        "--claims",
        action="store_true",
        help="dmc-stage: where the precondition is met, measure the two claims too (SFT per candidate, DMCCallback)",
    )
    parser.add_argument("--problems", type=int, nargs="+", default=[STUDENT_PROBLEMS], help="pre-training problems")
    parser.add_argument("--student_steps", type=int, default=PRESETS["default"].student_steps)
    parser.add_argument("--styles", nargs="+", default=["cot"], choices=STYLES, help="answer styles of the datasets")
    parser.add_argument(
        "--problem_steps", type=int, nargs="+", default=[TASK_KWARGS["steps"]], help="steps per problem"
    )
    parser.add_argument(
        "--max_values", type=int, nargs="+", default=[TASK_KWARGS["max_value"]], help="largest operand of the problems"
    )
    parser.add_argument("--prompts", type=int, default=PRESETS["default"].pool_prompts, help="SFT/dataset prompts")
    parser.add_argument("--eval_prompts", type=int, default=PRESETS["default"].eval_prompts)
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0], help="training seeds (dmc-stage: none measures step 0 only)"
    )
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=PRESETS["default"].epochs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="dmc: the lab preset whose world is probed"
    )
    parser.add_argument("--output_dir", default="lab_probes", help="scratch directory of the SFT runs")
    return parser


def splits(args, style: str = "cot", steps: int = TASK_KWARGS["steps"], max_value: int = TASK_KWARGS["max_value"]):
    """The lab's arithmetic splits with reference solutions in `style` (`steps` and `max_value` per problem); the
    probes read only the training split of such a call, and take the test split from the lab's own (the defaults)."""
    kwargs = {**TASK_KWARGS, "steps": steps, "max_value": max_value}
    dev = PRESETS["default"].dev_prompts  # as the lab draws its splits, so the same training prompts
    return make_task_splits(("arithmetic",), args.prompts, dev, args.eval_prompts, seed=0, style=style, **kwargs)


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    lab = Lab(PRESETS[args.preset], args.output_dir, workers=args.threads)
    if args.probe in ("dmc", "dmc-stage"):
        restore = silence_other_bars()  # one line per number, not DMC's scoring bars
        try:
            return dmc_transfer(lab, args) if args.probe == "dmc" else dmc_stage(lab, args)
        finally:
            restore()
    tok, test = lab.tokenizer, splits(args)["test"]
    size = PRESETS["default"].size
    for problems in args.problems:
        student = pretrained_model(tok, "lab-student", student_data(problems), args.student_steps, size, seed=1)
        base = accuracy(load(student), tok, test, PRESETS["default"].max_new_tokens)
        print(f"student of {problems} problems, {args.student_steps} steps: test accuracy {base:.3f}", flush=True)
        for style in args.styles if args.probe != "students" else ():
            for steps, max_value in itertools.product(args.problem_steps, args.max_values):
                data = splits(args, style, steps, max_value)["train"]
                label = f"{style} {steps}-step" + (f" (operands ≤ {max_value})" if max_value != 9 else "")
                if args.probe == "difficulty":
                    print(f"  {label} references: L = {relative_difficulty(load(student), tok, data):.3f}")
                    continue
                for seed in args.seeds:
                    print("  " + sft(lab, args, student, data, test, seed, label), flush=True)
    return 0


def sft(lab: Lab, args, student: str, data, test, seed: int, label: str) -> str:
    """SFT of `student` on `data` (the lab's trainer settings); one line: accuracy, first and last loss, L after."""
    config = SFTConfig(
        **trainer_settings(lab, seed, num_train_epochs=args.epochs, max_length=128, learning_rate=args.learning_rate)
    )
    trainer = fit(SFTTrainer(load(student), args=config, train_dataset=data, processing_class=lab.tokenizer))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    acc = accuracy(trainer.model, lab.tokenizer, test, PRESETS["default"].max_new_tokens)
    return (
        f"SFT on {len(data)} {label} references, {args.epochs:g} epochs at lr {args.learning_rate:g}, seed {seed}: "
        f"test accuracy {acc:.3f}, first loss {losses[0]:.3f}, last loss {losses[-1]:.3f}"
    )


def dmc_transfer(lab: Lab, args) -> int:
    """DMC's terms on the lab's candidate datasets (and cot references of problems with larger operands, `--max_values`
    above 9) at step 0 and after SFT on each `--train` dataset with DMC's budget: one line per dataset and state."""
    from .experiments.common import pretrain_all
    from .experiments.dmc_formula import budget, overtaking
    from .experiments.teachers import cast, cast_pretraining

    p, tok = lab.preset, lab.tokenizer
    pretrain_all(lab, cast_pretraining(lab), {})
    world = cast(lab)
    datasets = cast_candidates(world)
    for flag, names in (("--train", args.train), ("--without", args.without)):
        unknown = sorted(set(names) - set(datasets))
        if unknown:
            raise SystemExit(f"{flag} {unknown}: not a DMC candidate of the lab; choose from {sorted(datasets)}.")
    for max_value in (v for v in args.max_values if v != TASK_KWARGS["max_value"]):
        hard = splits(args, "cot", TASK_KWARGS["steps"], max_value)["train"]
        datasets[f"cot references, operands ≤ {max_value}"] = verified(hard)
    ranked = {name: d for name, d in datasets.items() if name not in args.without}

    def show(model, state: str) -> None:
        table = rank_datasets(
            model, tok, ranked, world["splits"]["dev"], task_reward, probe_size=None, dev_size=None,
            max_new_tokens=p.max_new_tokens,
        )  # fmt: skip
        print(f"{state}: C = {table[0]['capability']:.3f} on {len(world['splits']['dev'])} dev prompts", flush=True)
        for row in table:
            print(f"  {row['dataset']}: Q = {row['quality']:.3f}, L = {row['difficulty']:.3f}, DMC = {row['dmc']:.3f}")
        print(f"  {overtaking(table[0]['dataset'], [table])}")

    student = (
        world["student"]
        if not args.student_styles
        else styled_student(lab, args.student_styles, args.problems[0], args.student_steps)
    )
    show(
        load(student), "base student" + (f" of styles {', '.join(args.student_styles)}" if args.student_styles else "")
    )
    steps = budget(p)
    for name, seed in itertools.product(args.train, args.seeds):
        config = SFTConfig(**trainer_settings(lab, seed, max_steps=steps, max_length=128))
        trainer = fit(SFTTrainer(load(student), args=config, train_dataset=datasets[name], processing_class=tok))
        show(trainer.model, f"after SFT on {name} ({steps} steps, seed {seed})")
    return 0


def dmc_stage(lab: Lab, args) -> int:
    """The precondition of the DMC world designed from the formula (`experiments.dmc_formula`): `rank_datasets` (Q, L, C, DMC of every candidate)
    on its base student (step 0) and on the checkpoint after the first stage of plain SFT on the step-0 choice, per
    `--seeds`; then Spearman ρ between the two rankings and the capability at which each dataset would overtake the
    step-0 choice. The run stops at the stage's end (the checkpoint is that of the full budget's schedule)."""
    from .experiments import dmc_formula as formula
    from .experiments.common import pretrain_all
    from .experiments.teachers import domain_splits

    p, tok = lab.preset, lab.tokenizer
    pretrain_all(lab, formula.pretraining(lab), {})
    student, dev = formula.student_run(lab).build(tok), domain_splits(lab)["dev"]
    datasets = formula.candidate_datasets(lab, args.noise, args.design)
    step0 = formula.ranking(lab, datasets, dev, load(student))
    top, steps, stage = step0[0]["dataset"], formula.budget(p), formula.stage_steps(p)
    print(
        f"preset {p.name}: {len(dev)} dev prompts, {p.pool_prompts} rows per dataset, stage {stage} steps of {steps}"
    )
    print(f"step 0: {formula.table_text(step0)}\n  predicted: {formula.overtaking(top, [step0])}", flush=True)
    if not args.seeds:
        return 0
    staged = []
    for seed in args.seeds:
        staged.append(formula.staged_ranking(lab, student, datasets, dev, top, seed))
        print(
            f"after stage 1 of SFT on {top} (step {stage}, seed {seed}): {formula.table_text(staged[-1])}", flush=True
        )
    result = formula.stage_precondition(step0, staged, stage, top)
    print(
        f"precondition: {result['name']} = {result['value']:+.3f}, needs {result['threshold']}: "
        f"{'met' if result['met'] else 'NOT MET'}"
    )
    print(f"  {result['detail']}")
    if args.claims and result["met"]:
        print_claims(lab, student, datasets, domain_splits(lab), step0)
    elif args.claims:
        print("claims not measured: no mechanism here")
    return 0


def print_claims(lab: Lab, student: str, datasets, splits, step0) -> None:
    """`dmc_formula.claims` on the DMC formula world, one line per method and per comparison."""
    from .experiments.dmc_formula import claims

    out = claims(lab, student, datasets, splits, step0, {})
    print(f"test accuracy after {lab.preset.dmc_epochs} stages ({len(splits['test'])} test prompts), per seed:")
    for name, m in out["methods"].items():
        print(f"  {name}: {m['mean']:.3f} ± {m['std']:.3f} ({', '.join(f'{v:.3f}' for v in m['values'])})")
    print(
        f"static: Spearman ρ of step-0 DMC against mean accuracy over {len(datasets)} candidates: {out['spearman']:+.3f}"
    )
    for label, seeds in out["callback_weights"].items():
        rounds = " | ".join(
            ", ".join(f"{n} {w:.2f}" for n, w in r.items()) for r in seeds[0]
        )  # the first seed's rounds
        print(f"  {label} mixture weights per round (seed {lab.preset.seeds[0]}): {rounds}")
    for method, baseline, c in out["comparisons"]:
        print(
            f"  {method} − {baseline}: {c['difference']:+.3f} (standard error {c['standard_error']:.3f}): "
            f"{c['verdict']}"
        )


def cast_candidates(world: dict) -> dict:
    """The lab's first DMC candidates: one dataset per teacher of the cast (its answers, right or wrong, to every
    training prompt) and the reference solutions (every row correct)."""
    from .experiments.dmc_formula import COLUMNS

    pool = world["pool"]
    datasets = {
        t: pool.filter(lambda row, t=t: row["teacher"] == t).select_columns(COLUMNS) for t in world["teachers"]
    }
    datasets["reference"] = verified(world["splits"]["train"])
    return datasets


def verified(references):
    """Reference solutions as a DMC candidate: every row correct, DMC's columns."""
    from .experiments.dmc_formula import COLUMNS

    return references.add_column("correct", [True] * len(references)).select_columns(COLUMNS)


def styled_student(lab: Lab, styles: list[str], problems: int, steps: int) -> str:
    """A student pre-trained for `steps` (the lab's size and seed) on `problems` problems shared equally among `styles`
    (solutions only: no privileged or identity rows): one that already knows every style's format, so a dataset's
    L measures its content rather than an unfamiliar format."""
    rows = [
        make_task_splits(("arithmetic",), problems // len(styles), 1, 1, seed=300 + i, style=style, **TASK_KWARGS)
        for i, style in enumerate(styles)
    ]
    data = concatenate_datasets([r["train"] for r in rows]).shuffle(seed=0)
    return pretrained_model(lab.tokenizer, "lab-probe-styled-student", data, steps, lab.preset.size, seed=1)


if __name__ == "__main__":
    raise SystemExit(main())
