"""Cost of one DMC reselection against one epoch of SFT, at a real vocabulary.

    python benchmarks/bench_dmc.py [--shape qwen3-0.6b] [--vocab V] [--length 64] [--train_size 1024] [--rounds 2]

Same random-init student (`--shape`, see `bench_common`), four toy candidate datasets of `--train_size` rows each
(the arithmetic candidates of `trl_distill.lab.world.toys`, encoded by the real-vocabulary tokenizer), same process:

- epoch: `SFTTrainer` on the concatenated candidates, no callback. An epoch at a real vocabulary is minutes on CPU,
  so each round trains `--sft_steps` steps and the epoch is the median step time × the steps of one epoch
  (`ceil(rows / batch)`); the first step of a round is warm-up and not counted;
- reselection: one `DMCCallback` round at `DMCArguments()` defaults (probe 128 rows per dataset, 64 dev prompts) with
  `max_new_tokens = --length`, split into capability `C` (greedy generation) and difficulty `L` (scoring), for each of
  `--strategies` (`top_fraction` scores every row rather than a probe and has no target).

The two are interleaved over `--rounds` rounds; each keeps its median. Target: a probe-based (`mixture`) reselection
costs at most 10% of an epoch.
"""

import math
import os
import statistics
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402


def main(argv=None):
    parser = common.make_parser(__doc__, length=64, batch=16, rounds=2)
    parser.add_argument("--train_size", type=int, default=1024, help="rows per candidate dataset")
    parser.add_argument("--sft_steps", type=int, default=4, help="SFT steps timed per round (the first is warm-up)")
    parser.add_argument("--strategies", nargs="+", default=["mixture"], choices=["mixture", "top_fraction"])
    options = parser.parse_args(argv)
    common.setup_torch(options.threads)

    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    import trl_distill.dmc.dmc_callback as dmc_module
    from trl_distill.core.sampler import SelectionSampler
    from trl_distill.dmc.dmc_callback import CandidateDatasets, DMCCallback
    from trl_distill.lab.world.tasks import task_reward
    from trl_distill.lab.world.toys import toy_candidates

    vocab = common.vocab_of(options)
    tokenizer = common.make_tokenizer(vocab)
    model = common.make_model(options.shape, vocab, tokenizer)
    datasets, dev = toy_candidates(train_size=options.train_size)
    candidates = CandidateDatasets(datasets)
    clock = common.Clock()

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(clock())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(clock())

    step_times = []

    def sft_steps():
        step_clock = StepClock()
        with tempfile.TemporaryDirectory() as output_dir:
            config = SFTConfig(
                output_dir=output_dir,
                max_steps=options.sft_steps,
                per_device_train_batch_size=options.batch,
                learning_rate=1e-4,
                save_strategy="no",
                report_to=[],
                logging_steps=10_000,
                use_cpu=not torch.cuda.is_available(),
                bf16=torch.cuda.is_available(),
                gradient_checkpointing=False,
                max_length=256,
                disable_tqdm=True,
            )
            trainer = SFTTrainer(
                model=model,
                args=config,
                train_dataset=candidates.train_dataset,
                processing_class=tokenizer,
                callbacks=[step_clock],
            )
            trainer.train()
        marks = step_clock.marks
        step_times.append(statistics.median([e - b for b, e in zip(marks[0::2], marks[1::2])][1:]))

    spent = {"capability": 0.0}
    measure_capability = dmc_module.capability

    def timed_capability(*args, **kwargs):
        start = clock()
        result = measure_capability(*args, **kwargs)
        spent["capability"] += clock() - start
        return result

    dmc_module.capability = timed_capability
    callbacks = {
        s: DMCCallback(candidates, dev, task_reward, strategy=s, tokenizer=tokenizer, max_new_tokens=options.length)
        for s in options.strategies
    }
    capability = {s: [] for s in options.strategies}

    def reselect(strategy):
        def fn():
            spent["capability"] = 0.0
            callbacks[strategy].reselect(0, SelectionSampler(len(candidates)), model=model, processing_class=tokenizer)
            capability[strategy].append(spent["capability"])

        return fn

    setups = {"sft": sft_steps, **{s: reselect(s) for s in options.strategies}}
    times = common.interleaved(setups, options.rounds, clock)
    dmc_module.capability = measure_capability

    steps_per_epoch = math.ceil(len(candidates) / options.batch)
    epochs = [t * steps_per_epoch for t in step_times]
    print(
        f"DMC reselection vs an SFT epoch: {common.shape_label(options)}, {len(datasets)} candidate datasets x "
        f"{options.train_size} rows = {len(candidates)} rows/epoch, batch {options.batch}, median of {options.rounds} "
        f"interleaved rounds, {'CUDA wall-clock' if common.cuda() else f'CPU process time, {options.threads} thread(s)'}"
    )
    print(
        f"  SFT step {statistics.median(step_times):.3f} s x {steps_per_epoch} steps = epoch "
        f"{statistics.median(epochs):.1f} s   rounds (step s): " + " ".join(f"{t:.3f}" for t in step_times)
    )
    rows = []
    for strategy in options.strategies:
        seconds, c = statistics.median(times[strategy]), statistics.median(capability[strategy])
        ratio, ratio_spread = common.ratio_of(times[strategy], epochs)
        print(
            f"  reselection [{strategy}]: {seconds:.2f} s (C {c:.2f} s, L {seconds - c:.2f} s)  ratio to epoch "
            f"{ratio:.3f}   rounds (s): " + " ".join(f"{t:.2f}" for t in times[strategy])
        )
        target = "<= 0.1" if strategy == "mixture" else None
        note = f"{len(candidates)} rows/epoch; epoch = median step x {steps_per_epoch}"
        rows.append(common.measure("dmc", f"{strategy} reselection / epoch", ratio, target, ratio_spread, note))
    return common.report(options, rows)


if __name__ == "__main__":
    main()
