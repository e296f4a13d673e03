"""`trl-distill lab`: the embedded default job, offline on the tiny world.

Runs five experiments (SCAS, DMC, OGLS-SD, CaMOPD, quantification), each comparing a method with its baselines at the
same training budget over several seeds, and writes `report.md`, PNG plots and `results.json` into `--output_dir`.
Models the lab pre-trains are cached on disk (`$TRL_DISTILL_CACHE`), so a second run skips them.

`--real` runs the real-model experiment instead (SCAS on SmolLM2-135M-Instruct, `lab/experiments/real_scas.py`): its
section and `results.json` entry are added to the report already in `--output_dir`, if there is one.
"""

import argparse
import dataclasses
import logging
import os
import time
import warnings


def make_parser(prog: str | None = "trl-distill lab") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small preset (same as `--preset quick`)")
    parser.add_argument(
        "--preset",
        choices=("smoke", "quick", "default", "full"),
        default=None,
        help="run size: `smoke` (the default test suite's run, not evidence), `quick`, `default` (the default), `full` "
        "(the default's world, 5 seeds and twice the test prompts)",
    )
    parser.add_argument("--output_dir", default="lab_report", help="report directory (default: lab_report/)")
    parser.add_argument("--experiments", nargs="+", default=None, help="a subset of the experiments, in order")
    parser.add_argument(
        "--real",
        action="store_true",
        help="the real-model experiment instead (SCAS on SmolLM2-135M-Instruct; presets `default`, `smoke` and `full`, for a GPU), added "
        "to the report in --output_dir",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="override the preset's seeds (>= 3 advised)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads (default 2): torch's, and the worker processes of independent runs",
    )
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..lab.progress import interactive, silence_other_bars

    # CI logs, `make demo > log`: one line per phase, not thousands of bar redraws
    restore_bars = silence_other_bars() if not interactive() else (lambda: None)
    # SCAS's report note counts the prompts without a verified answer once, instead of a warning per training run
    selection_logger = logging.getLogger("trl_distill.scas.selection")
    selection_level = selection_logger.level
    selection_logger.setLevel(logging.ERROR)
    try:
        return run_lab(parser, args)
    finally:  # also after a usage error: a caller in the same process gets its bars and warnings back
        restore_bars()
        selection_logger.setLevel(selection_level)


def run_lab(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The lab run of `main` (parsed `args`; `parser` reports usage errors)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    import datasets
    import torch
    import transformers

    from ..lab.experiments import EXPERIMENTS, get, pretraining
    from ..lab.experiments.common import PRESETS, Lab, clean_scratch, pretrain_all
    from ..lab.report import summary_table, write_report

    torch.set_num_threads(args.threads)
    if not torch.cuda.is_available():  # DeepSpeed would warn that it found no GPU, once in every worker process
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # weight loading: the lab shows one bar per phase instead
    datasets.disable_progress_bars()  # per-run tokenization
    warnings.filterwarnings("ignore")
    if args.quick and args.preset not in (None, "quick"):
        parser.error(f"--quick and --preset {args.preset} disagree; give one of them")
    preset = PRESETS[args.preset or ("quick" if args.quick else "default")]
    if args.seeds:
        preset = dataclasses.replace(preset, seeds=tuple(args.seeds))
    if args.real:
        return run_real(parser, args)
    names = args.experiments or list(EXPERIMENTS)
    for name in names:
        if name not in EXPERIMENTS:
            parser.error(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    names = [n for n in EXPERIMENTS if n in names]

    start = time.perf_counter()
    lab = Lab(preset, args.output_dir, workers=args.threads)
    timings: dict = {}
    results = {"preset": preset.to_dict(), "experiments": {}, "timings": timings}
    try:
        pretrain_all(lab, [run for name in names for run in pretraining(name, lab)], timings)
        for name in names:
            results["experiments"][name] = get(name)(lab, timings)
    finally:
        clean_scratch(lab)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.output_dir, results)
    print(summary_table(results))
    if preset.name in ("smoke", "quick"):
        print(
            f"\n({preset.name} preset: a smoke test; its verdicts are not evidence. `trl-distill lab` runs the real one.)"
        )
    print(f"\nreport: {os.path.join(args.output_dir, 'report.md')}  ({results['wall_seconds']:.0f} s)")
    return 0


def run_real(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`--real`: the real-model SCAS experiment, its entry added to (or replacing the one in) `--output_dir`'s report."""
    import json

    import torch

    from ..lab.experiments import real_scas
    from ..lab.experiments.common import PRESETS, Lab, clean_scratch
    from ..lab.report import summary_table, write_report

    if args.quick or args.experiments or args.preset == "quick":
        parser.error(
            "--real takes --preset default, smoke or full (its own sizes), --seeds, --threads and --output_dir only"
        )
    preset = real_scas.REAL_PRESETS[args.preset or "default"]
    if args.seeds:
        preset = dataclasses.replace(preset, seeds=tuple(args.seeds))
    start = time.perf_counter()
    # the lab's plumbing (scratch directories, worker processes); the tiny-world preset's sizes are not used
    # on a GPU the runs go one after the other in this process (CUDA does not survive the workers' fork)
    workers = 1 if torch.cuda.is_available() else args.threads
    lab = Lab(dataclasses.replace(PRESETS["smoke"], seeds=preset.seeds), args.output_dir, workers=workers)
    existing = os.path.join(args.output_dir, "results.json")
    results = {"preset": preset.to_dict(), "experiments": {}, "timings": {}}
    if os.path.exists(existing):  # a tiny-world report is there: the real experiment becomes one more section of it
        with open(existing) as f:
            results = json.load(f)
        results.pop("plots", None)
    try:
        entry = real_scas.run(lab, results["timings"], preset)
    finally:
        clean_scratch(lab)
    entry["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["experiments"]["real_scas"] = entry
    results.setdefault("wall_seconds", entry["wall_seconds"])
    write_report(args.output_dir, results)
    print(summary_table({"experiments": {"real_scas": entry}}))
    print(f"\nreport: {os.path.join(args.output_dir, 'report.md')}  (real experiment: {entry['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
