"""Step time of CaMOPDTrainer against trl.DistillationTrainer on the same student, teacher, batch and lengths.

Runs, in one process and on the tiny world:

- `DistillationTrainer` (the baseline);
- `CaMOPDTrainer` with one source, one teacher, `rho=1.0` (target: at most 1.15x the baseline);
- `CaMOPDTrainer` with `rho=0.5` (generates 2x the completions and scores their gap): the added cost is reported,
  split into generation and gap scoring.

Completions are forced to the full `--length` (`min_new_tokens`) so every run processes the same number of tokens.

    python benchmarks/bench_camopd.py --steps 8 --batch 8 --length 32
"""

import argparse
import os
import statistics
import tempfile
import time


os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import PrinterCallback, ProgressCallback  # noqa: E402
from trl import DistillationConfig, DistillationTrainer  # noqa: E402

from trl_distill.camopd.camopd_config import CaMOPDConfig  # noqa: E402
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer  # noqa: E402
from trl_distill.lab.models import tiny_model  # noqa: E402
from trl_distill.lab.tasks import make_task_splits  # noqa: E402
from trl_distill.lab.tokenizer import build_tokenizer  # noqa: E402


def timed(cls):
    """A subclass that adds the wall time of generation and of gap scoring to `self.timings`."""

    class Timed(cls):
        def _generate(self, prompts):
            start = time.perf_counter()
            out = super()._generate(prompts)
            self.timings["generation"] += time.perf_counter() - start
            return out

        def _select_by_gap(self, output, num_keep):
            start = time.perf_counter()
            out = super()._select_by_gap(output, num_keep)
            self.timings["gap_scoring"] += time.perf_counter() - start
            return out

    return Timed


def run(name, trainer_cls, config_cls, args, dataset, tokenizer, **extra):
    tokenizer.padding_side = "left"
    student = tiny_model(tokenizer, args.student_size, "qwen2", seed=0)
    teacher = tiny_model(tokenizer, args.teacher_size, "llama", seed=1)
    with tempfile.TemporaryDirectory() as out:
        config = config_cls(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            max_completion_length=args.length,
            generation_kwargs={"min_new_tokens": args.length},
            learning_rate=1e-4,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            bf16=False,
            use_cpu=not torch.cuda.is_available(),
            gradient_checkpointing=False,
            seed=0,
            **extra,
        )
        trainer = timed(trainer_cls)(student, teacher, config, dataset, processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.timings = {"generation": 0.0, "gap_scoring": 0.0}
        trainer.train()
    step_times = [log["step_time"] for log in trainer.state.log_history if "step_time" in log][1:]  # skip warm-up
    return step_times, trainer.timings["generation"] / args.steps, trainer.timings["gap_scoring"] / args.steps


def summarize(name, runs):
    steps = [t for step_times, _, _ in runs for t in step_times]
    result = {
        "step": statistics.median(steps),
        "generation": statistics.median(g for _, g, _ in runs),
        "gap_scoring": statistics.median(s for _, _, s in runs),
    }
    print(
        f"{name:<22} step {result['step']:.3f}s (median of {len(steps)})  generation {result['generation']:.3f}s  "
        f"gap scoring {result['gap_scoring']:.3f}s"
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--student-size", default="xs")
    parser.add_argument("--teacher-size", default="s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    dataset = make_task_splits(("reverse", "sort", "count", "copy"), 256, 4, 4, seed=0)["train"]
    print(
        f"student {args.student_size}, teacher {args.teacher_size}, batch {args.batch}, completion length "
        f"{args.length}, {args.steps} steps, device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    setups = {
        "DistillationTrainer": (DistillationTrainer, DistillationConfig, {}),
        "CaMOPD rho=1.0": (CaMOPDTrainer, CaMOPDConfig, {"rho": 1.0}),
        "CaMOPD rho=0.5": (CaMOPDTrainer, CaMOPDConfig, {"rho": 0.5}),
    }
    runs = {name: [] for name in setups}
    for _ in range(args.repeats):  # interleaved, so load changes on a shared machine hit every setup alike
        for name, (trainer_cls, config_cls, extra) in setups.items():
            runs[name].append(run(name, trainer_cls, config_cls, args, dataset, tokenizer, **extra))
    base, same, half = (summarize(name, runs[name]) for name in setups)

    print(f"ratio CaMOPD(rho=1.0) / DistillationTrainer step time: {same['step'] / base['step']:.3f} (target <= 1.15)")
    print(f"ratio CaMOPD(rho=0.5) / DistillationTrainer step time: {half['step'] / base['step']:.3f}")
    print(
        f"ratio generation time rho=0.5 / rho=1.0: {half['generation'] / same['generation']:.3f} "
        f"(2x the completions); gap scoring adds {half['gap_scoring'] / base['step']:.3f} of a baseline step"
    )


if __name__ == "__main__":
    main()
