"""Cost of one DMC reselection against one epoch of SFT on the toy world.

    python benchmarks/bench_dmc.py [--train_size 256] [--batch_size 16]

Same student (the toy world's briefly pre-trained `xs` Qwen2), same four candidate datasets (`--train_size` rows
each), same process:

- epoch: one epoch of `SFTTrainer` on the concatenated candidates, no callback (the baseline);
- reselection: one `DMCCallback` round at the default settings (`DMCArguments()`: probe 128 rows per dataset,
  64 dev prompts, 64 new tokens), split into capability `C` (greedy generation) and difficulty `L` (scoring), for
  the probe-based strategies (`mixture`, `top_dataset`) and for `top_fraction`, which scores every row.

Target: a probe-based reselection costs at most 10% of an epoch. The machine may be shared: the ratios are taken
within one run, best of `--repeats` for the reselections.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_size", type=int, default=256, help="rows per candidate dataset")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))

    tokenizer = build_tokenizer()
    model, _ = toy_student(tokenizer)
    datasets, dev = toy_candidates(train_size=args.train_size)
    candidates = CandidateDatasets(datasets)
    defaults = DMCArguments()

    with tempfile.TemporaryDirectory() as output_dir:
        config = SFTConfig(
            output_dir=output_dir,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size,
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
    model.eval()

    rows = []
    for strategy in ("mixture", "top_fraction"):
        callback = DMCCallback(candidates, dev, task_reward, strategy=strategy, tokenizer=tokenizer)
        seconds, capability_seconds = timed_round(callback, model, tokenizer, args.repeats)
        rows.append((strategy, seconds, capability_seconds, callback.scores))

    steps = -(-len(candidates) // args.batch_size)
    print(f"toy world: {len(datasets)} candidate datasets x {args.train_size} rows = {len(candidates)} rows/epoch")
    print(
        f"defaults: probe_size={defaults.probe_size}, dev_size={defaults.dev_size}, "
        f"max_new_tokens={defaults.max_new_tokens}"
    )
    print(f"epoch of SFT (baseline): {epoch:.2f} s ({steps} steps of {args.batch_size})")
    for strategy, seconds, capability_seconds, _ in rows:
        print(
            f"reselection [{strategy}]: {seconds:.2f} s (C {capability_seconds:.2f} s, L {seconds - capability_seconds:.2f} s)"
            f"  ratio to epoch {seconds / epoch:.3f}"
        )
    strategy, seconds, _, scores = rows[0]
    print(f"probe-based reselection / epoch = {seconds / epoch:.3f} (target <= 0.10)")
    print(
        "last scores:",
        {name: round(v["dmc"], 4) for name, v in scores["datasets"].items()},
        f"C={scores['capability']}",
    )


if __name__ == "__main__":
    main()
