"""Cost of one DMC reselection against one epoch of SFT on the toy world.

    python benchmarks/bench_dmc.py [--train_sizes 256 1024] [--batch_size 16]

Same student (the toy world's briefly pre-trained `xs` Qwen2), four candidate datasets of each `--train_sizes` rows,
same process:

- epoch: one epoch of `SFTTrainer` on the concatenated candidates, no callback (the baseline);
- reselection: one `DMCCallback` round at the default settings (`DMCArguments()`: probe 128 rows per dataset,
  64 dev prompts, 64 new tokens), split into capability `C` (greedy generation) and difficulty `L` (scoring), for
  the probe-based strategies (`mixture`, `top_dataset`) and for `top_fraction`, which scores every row.

Target: a probe-based reselection costs at most 10% of an epoch. Its cost is fixed (probe and dev sizes) while an
epoch grows with the data, so the ratio is printed for several dataset sizes. The machine may be shared: the ratios are
taken within one run, best of `--repeats` for the reselections.
"""

import argparse
import os
import tempfile
import time


os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from trl_distill.core.sampler import SelectionSampler  # noqa: E402
from trl_distill.dmc import compatibility as dmc  # noqa: E402
from trl_distill.dmc.dmc_callback import CandidateDatasets, DMCArguments, DMCCallback  # noqa: E402
from trl_distill.dmc.toy import toy_candidates, toy_student  # noqa: E402
from trl_distill.lab.tasks import task_reward  # noqa: E402
from trl_distill.lab.tokenizer import build_tokenizer  # noqa: E402


def timed_round(callback: DMCCallback, model, tokenizer, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds of one reselection, and of its capability part."""
    spent = {"capability": 0.0}
    measure_capability = dmc.capability

    def timed_capability(*args, **kwargs):
        start = time.perf_counter()
        result = measure_capability(*args, **kwargs)
        spent["capability"] += time.perf_counter() - start
        return result

    best, best_c = float("inf"), float("inf")
    import trl_distill.dmc.dmc_callback as module

    module.capability = timed_capability
    try:
        for _ in range(repeats):
            spent["capability"] = 0.0
            sampler = SelectionSampler(len(callback.candidates))
            start = time.perf_counter()
            callback.reselect(0, sampler, model=model, processing_class=tokenizer)
            elapsed = time.perf_counter() - start
            if elapsed < best:
                best, best_c = elapsed, spent["capability"]
    finally:
        module.capability = measure_capability
    return best, best_c


def bench_size(train_size: int, batch_size: int, repeats: int, tokenizer) -> dict:
    """Times one SFT epoch and one reselection per strategy on candidates of `train_size` rows each."""
    model, _ = toy_student(tokenizer)
    datasets, dev = toy_candidates(train_size=train_size)
    candidates = CandidateDatasets(datasets)
    with tempfile.TemporaryDirectory() as output_dir:
        config = SFTConfig(
            output_dir=output_dir,
            num_train_epochs=1,
            per_device_train_batch_size=batch_size,
            learning_rate=1e-3,
            save_strategy="no",
            report_to=[],
            logging_steps=10_000,
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=False,
            max_length=256,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=candidates.train_dataset, processing_class=tokenizer
        )
        start = time.perf_counter()
        trainer.train()
        epoch = time.perf_counter() - start
    rounds = {}
    for strategy in ("mixture", "top_fraction"):
        callback = DMCCallback(candidates, dev, task_reward, strategy=strategy, tokenizer=tokenizer)
        rounds[strategy] = timed_round(callback, model, tokenizer, repeats)
    return {"rows": len(candidates), "datasets": len(datasets), "epoch": epoch, "rounds": rounds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_sizes", type=int, nargs="+", default=[256, 1024], help="rows per candidate dataset")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    tokenizer = build_tokenizer()
    defaults = DMCArguments()
    print(
        f"defaults: probe_size={defaults.probe_size} per dataset, dev_size={defaults.dev_size}, "
        f"max_new_tokens={defaults.max_new_tokens}"
    )
    for train_size in args.train_sizes:
        result = bench_size(train_size, args.batch_size, args.repeats, tokenizer)
        steps = -(-result["rows"] // args.batch_size)
        print(
            f"\ntoy world: {result['datasets']} candidate datasets x {train_size} rows = {result['rows']} rows/epoch; "
            f"epoch of SFT (baseline): {result['epoch']:.2f} s ({steps} steps of {args.batch_size})"
        )
        for strategy, (seconds, capability_seconds) in result["rounds"].items():
            print(
                f"  reselection [{strategy}]: {seconds:.2f} s (C {capability_seconds:.2f} s, "
                f"L {seconds - capability_seconds:.2f} s)  ratio to epoch {seconds / result['epoch']:.3f}"
            )
        ratio = result["rounds"]["mixture"][0] / result["epoch"]
        verdict = "meets" if ratio <= 0.10 else "misses"
        print(f"  probe-based reselection / epoch = {ratio:.3f} ({verdict} the target <= 0.10)")


if __name__ == "__main__":
    main()
