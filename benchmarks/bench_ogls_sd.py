"""Step time and peak memory of OGLSSDTrainer (its defaults; the equal-work OPSD form) against DistillationTrainer.

    python benchmarks/bench_ogls_sd.py [--shape qwen3-0.6b] [--vocab V] [--length 64] [--batch 4] [--rounds 2]
    python benchmarks/bench_ogls_sd.py --growth_vocabs 32768 151669 262144 --growth_lengths 128 512 2048

Same student, batch, generation length and rollouts per step in every run (see `bench_trainers.py`): the teacher of
`DistillationTrainer` is a frozen copy of the student, as OGLS-SD's `initial` teacher is, and its dataset repeats each
prompt `num_generations` times. Every run is a fresh process (peak memory is never shared); the trainers run in
interleaved rounds; each keeps its median round; the spread of the per-round time ratio is printed.

Two OGLS-SD rows, because the defaults do less work than the baseline: `OGLSSDConfig()` (v2) distribution-matches only
the rollouts its verifier rejects (up to `max_distill_tokens` tokens each), while `DistillationTrainer` matches every
token of every rollout, so their ratio measures the recipe as much as the implementation. `OGLSSDConfig.opsd()` matches
every token of every rollout with the same symmetric JSD (β = 0.5) at the same lengths, without steering: the
equal-work row, whose ratio measures the implementation (its teacher also reads the privileged context in its prompt,
which `DistillationTrainer`'s does not).

The growth table measures peak memory of both trainers as the vocabulary grows (at `--growth_length_fixed` tokens)
and as the completion grows (at `--growth_vocab_fixed` ids), at batch `--growth_batch`. Both trainers hold the
student's and teacher's `(B, T, V)` logits, so both grow with `B·T·V`; what the table shows is that OGLS-SD adds no
`(B, T, V)` tensor of its own: the ratio stays flat while `B·T·V` grows 8× and 16×.

Targets (issue 18): OGLS-SD at most 1.3× the step time and 1.1× the peak memory of `DistillationTrainer`, for the
defaults and for the equal-work row.
"""

import argparse
import os
import statistics
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402
import bench_trainers  # noqa: E402


def growth_table(options, baseline: str, method: str, label: str, **child) -> list[dict]:
    """Peak memory of `baseline` and `method` over the vocabulary and length sweeps (one fresh run each)."""
    configs = [(v, options.growth_length_fixed) for v in options.growth_vocabs]
    configs += [(options.growth_vocab_fixed, t) for t in options.growth_lengths if t != options.growth_length_fixed]
    rows = []
    for vocab, length in configs:
        overrides = dict(vocab=vocab, length=length, batch=options.growth_batch, steps=2, warmup=0, **child)
        overrides["num_generations"] = min(options.num_generations, options.growth_batch)
        base = bench_trainers.fresh_run(options, baseline, **overrides)
        other = bench_trainers.fresh_run(options, method, **overrides)
        rows.append({"vocab": vocab, "length": length, "base": base, "method": other})
    print(f"\npeak memory growth (batch {options.growth_batch}, one fresh process per cell, MiB):")
    print(f"{'vocab':>9}{'length':>8}{'B·T·V fp32':>12}{'baseline':>10}{label:>10}{'ratio':>7}{'base/BTV':>10}")
    for r in rows:
        btv = r["base"]["logits_mib"]
        print(
            f"{r['vocab']:>9,}{r['length']:>8}{btv:>12.0f}{r['base']['peak_mib']:>10.0f}{r['method']['peak_mib']:>10.0f}"
            f"{r['method']['peak_mib'] / r['base']['peak_mib']:>7.2f}{r['base']['peak_mib'] / btv:>10.2f}"
        )
    return rows


def add_growth_arguments(parser) -> None:
    parser.add_argument("--growth_vocabs", type=int, nargs="*", default=[], help="e.g. 32768 151669 262144")
    parser.add_argument("--growth_lengths", type=int, nargs="*", default=[], help="e.g. 128 512 2048")
    parser.add_argument("--growth_vocab_fixed", type=int, default=32_768)
    parser.add_argument("--growth_length_fixed", type=int, default=128)
    parser.add_argument("--growth_batch", type=int, default=2)


def growth_measures(benchmark: str, rows: list[dict]) -> list[dict]:
    if not rows:
        return []
    ratios = [r["method"]["peak_mib"] / r["base"]["peak_mib"] for r in rows]
    worst = max(ratios)
    cells = ", ".join(f"V={r['vocab'] // 1000}k T={r['length']}" for r in rows)
    return [common.measure(benchmark, "worst peak-memory ratio over the growth table", worst, "<= 1.1", note=cells)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_trainers.add_trainer_arguments(parser, length=64, batch=4, num_generations=4, steps=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each trainer keeps its median")
    add_growth_arguments(parser)
    options = parser.parse_args(argv)

    labels = {"distillation": "DistillationTrainer", "ogls_sd": "OGLS-SD defaults", "ogls_sd_opsd": "OGLS-SD .opsd()"}
    runs = {kind: [] for kind in labels}
    for _ in range(options.rounds):
        for kind in runs:
            runs[kind].append(bench_trainers.fresh_run(options, kind))
    steps = {kind: [r["step_s"] for r in results] for kind, results in runs.items()}
    peaks = {kind: [r["peak_mib"] for r in results] for kind, results in runs.items()}
    mixed = [r["mixed_groups"] for r in runs["ogls_sd"] if r["mixed_groups"] is not None]

    print(
        f"OGLS-SD (OGLSSDConfig() defaults; OGLSSDConfig.opsd(), every token matched: equal work) vs "
        f"DistillationTrainer: {common.shape_label(options)}, batch "
        f"{options.batch}, {options.num_generations} generations per prompt, {options.steps} steps (median of the "
        f"last {options.steps - options.warmup}), median of {options.rounds} interleaved rounds, "
        f"{'CUDA wall-clock' if common.cuda() else f'CPU process time, {options.threads} thread(s)'}"
    )
    print(f"{'trainer':<22}{'step (s)':>10}{'peak (MiB)':>12}   rounds (step s / peak MiB)")
    for kind, label in labels.items():
        rounds = " ".join(f"{s:.2f}/{p:.0f}" for s, p in zip(steps[kind], peaks[kind]))
        print(f"{label:<22}{statistics.median(steps[kind]):>10.3f}{statistics.median(peaks[kind]):>12.1f}   {rounds}")
    if mixed:
        print(f"fraction of groups with both outcomes (steered, defaults): {statistics.mean(mixed):.2f}")
    rows = []
    for kind, name, note in (
        ("ogls_sd", "", "defaults: only rejected rollouts matched (less work)"),
        ("ogls_sd_opsd", "equal work (.opsd()) ", "every token matched"),
    ):
        time_ratio, time_spread = common.ratio_of(steps[kind], steps["distillation"])
        memory_ratio, memory_spread = common.ratio_of(peaks[kind], peaks["distillation"])
        rows += [
            common.measure(
                "ogls_sd", f"{name}step time / DistillationTrainer", time_ratio, "<= 1.3", time_spread, note
            ),
            common.measure(
                "ogls_sd", f"{name}peak memory / DistillationTrainer", memory_ratio, "<= 1.1", memory_spread, note
            ),
        ]
    growth = growth_table(options, "distillation", "ogls_sd", "OGLS-SD")
    rows += growth_measures("ogls_sd", growth)
    return common.report(options, rows, {"runs": runs, "growth": growth})


if __name__ == "__main__":
    main()
