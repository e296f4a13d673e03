"""Step time of CaMOPDTrainer (ρ=1 and ρ=0.5) against trl.DistillationTrainer on the same student, teacher, data.

    python benchmarks/bench_camopd.py [--shape qwen3-0.6b] [--vocab V] [--length 64] [--batch 4] [--rounds 2] [--coherence]

One source, one teacher (a separate, larger random model of the same shape; see `bench_trainers.py`); every run a
fresh process; the three trainers run in interleaved rounds; each keeps its median round, and the spread of the
per-round ratio is printed. ρ=0.5 generates twice the completions and scores their gap, so its cost is reported
without a target. Peak memory is printed beside the times. `--coherence` adds a fourth trainer to the same rounds:
ρ=0.5 with the gradient coherence gain logged on every step (`gradient_coherence_every=1`), reported against ρ=0.5
without it (the diagnostic's cost on the steps where it is logged), with the seconds the trainer itself logs for it
(`coherence/seconds`).

Target (issue 18): CaMOPD with ρ=1 at most 1.15× the step time of `DistillationTrainer`.
"""

import argparse
import os
import statistics
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402
import bench_trainers  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_trainers.add_trainer_arguments(parser, length=64, batch=4, num_generations=1, steps=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each trainer keeps its median")
    parser.add_argument("--coherence", action="store_true", help="also time rho=0.5 with GCG logged every step")
    options = parser.parse_args(argv)

    kinds = {"distillation": "DistillationTrainer", "camopd_rho1": "CaMOPD rho=1.0", "camopd_rho05": "CaMOPD rho=0.5"}
    if options.coherence:
        kinds["camopd_rho05_gcg"] = "CaMOPD rho=0.5 + GCG"
    runs = {kind: [] for kind in kinds}
    for _ in range(options.rounds):
        for kind in kinds:
            runs[kind].append(bench_trainers.fresh_run(options, kind, teacher="separate"))
    steps = {kind: [r["step_s"] for r in results] for kind, results in runs.items()}
    peaks = {kind: [r["peak_mib"] for r in results] for kind, results in runs.items()}
    print(
        f"CaMOPD vs DistillationTrainer: {common.shape_label(options)}, batch {options.batch}, teacher "
        f"{'same size' if common.cuda() else 'hidden 128 x 4 layers'}, {options.steps} steps (median of the last "
        f"{options.steps - options.warmup}), median of {options.rounds} interleaved rounds, "
        f"{'CUDA wall-clock' if common.cuda() else f'CPU process time, {options.threads} thread(s)'}"
    )
    print(f"{'trainer':<22}{'step (s)':>10}{'peak (MiB)':>12}{'time ×':>8}{'memory ×':>10}   rounds (step s)")
    base_step, base_peak = statistics.median(steps["distillation"]), statistics.median(peaks["distillation"])
    for kind, label in kinds.items():
        step, peak = statistics.median(steps[kind]), statistics.median(peaks[kind])
        rounds = " ".join(f"{s:.2f}" for s in steps[kind])
        print(f"{label:<22}{step:>10.3f}{peak:>12.1f}{step / base_step:>8.2f}{peak / base_peak:>10.2f}   {rounds}")
    same, same_spread = common.ratio_of(steps["camopd_rho1"], steps["distillation"])
    half, half_spread = common.ratio_of(steps["camopd_rho05"], steps["distillation"])
    memory, memory_spread = common.ratio_of(peaks["camopd_rho1"], peaks["distillation"])
    rows = [
        common.measure("camopd", "rho=1 step time / DistillationTrainer", same, "<= 1.15", same_spread),
        common.measure("camopd", "rho=1 peak memory / DistillationTrainer", memory, None, memory_spread),
        common.measure(
            "camopd", "rho=0.5 step time / DistillationTrainer", half, None, half_spread, "2x the generations"
        ),
    ]
    if options.coherence:
        gcg, gcg_spread = common.ratio_of(steps["camopd_rho05_gcg"], steps["camopd_rho05"])
        logged = statistics.median(r["coherence_s"] for r in runs["camopd_rho05_gcg"])
        print(f"GCG diagnostic as logged (coherence/seconds, wall-clock): {logged:.3f} s per step")
        note = "gradient_coherence_every=1: every step logs it"
        rows.append(common.measure("camopd", "rho=0.5 step time with GCG / without", gcg, None, gcg_spread, note))
    return common.report(options, rows, {"runs": runs})


if __name__ == "__main__":
    main()
