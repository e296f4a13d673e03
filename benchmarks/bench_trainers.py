"""One training run of a distillation trainer in this process: median step time and peak memory (`RESULT {json}`).

The trainer benchmarks (`bench_ogls_sd.py`, `bench_camopd.py`) start this script once per configuration, each in a
fresh process, so peak memory is never shared between configurations.

    python benchmarks/bench_trainers.py --kind ogls_sd --shape qwen3-0.6b --length 64 --batch 8 --steps 4

Kinds, all on the same student (`--shape` scaled as `bench_common` says), batch, lengths and prompts:

- `distillation`: `trl.DistillationTrainer` (the baseline), teacher a frozen copy of the student (`--teacher copy`,
  OGLS-SD's `initial` teacher) or a separate, larger random model (`--teacher separate`, CaMOPD's setting); with
  `--num_generations G` its dataset repeats every prompt `G` times, so it trains on as many rollouts as OGLS-SD;
- `ogls_sd`: `OGLSSDTrainer` with `OGLSSDConfig()`'s defaults (only the shared training fields set); its verifier
  is a coin (parity of the completion's character codes), so most groups hold both outcomes and the steering runs;
  the defaults distribution-match only the rollouts the verifier rejects (less work than `distillation`);
- `ogls_sd_opsd`: `OGLSSDTrainer` with `OGLSSDConfig.opsd()` (the same coin verifier): every rollout matched over
  its whole length by the symmetric JSD (β = 0.5, as `distillation`), no steering, no SFT term: the work of
  `distillation`, except that its teacher also reads the privileged context (the reference solution) in its prompt;
- `camopd_rho1`, `camopd_rho05`: `CaMOPDTrainer`, one source, one teacher, `rho=1.0` / `rho=0.5`;
- `camopd_rho05_gcg`: `camopd_rho05` with the gradient coherence gain logged on every step
  (`gradient_coherence_every=1`), so each timed step is one where the diagnostic runs.

`min_new_tokens = max_completion_length = --length` fixes the generation length. Step time: CPU process time (fixed
thread count) or CUDA wall-clock, median of the steps after `--warmup`.
"""

import argparse
import copy
import os
import statistics
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402


KINDS = ("distillation", "ogls_sd", "ogls_sd_opsd", "camopd_rho1", "camopd_rho05", "camopd_rho05_gcg")


def add_trainer_arguments(parser, length: int, batch: int, num_generations: int, steps: int) -> None:
    common.add_common_arguments(parser, length=length)
    parser.add_argument("--batch", type=int, default=batch, help="per-device train batch (rollouts per step)")
    parser.add_argument("--num_generations", type=int, default=num_generations)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=1)


def child_argv(options, kind: str, **overrides) -> list[str]:
    values = {
        "kind": kind,
        "shape": options.shape,
        "length": options.length,
        "batch": options.batch,
        "num_generations": options.num_generations,
        "steps": options.steps,
        "warmup": options.warmup,
        "threads": options.threads,
        **({"vocab": options.vocab} if options.vocab else {}),
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def fresh_run(options, kind: str, **overrides) -> dict:
    return common.fresh(os.path.abspath(__file__), child_argv(options, kind, **overrides))


def run(options) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    from trl_distill.camopd.camopd_config import CaMOPDConfig
    from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
    from trl_distill.lab.world.tasks import make_task_splits
    from trl_distill.ogls_sd.ogls_sd_config import OGLSSDConfig
    from trl_distill.ogls_sd.ogls_sd_trainer import OGLSSDTrainer

    common.setup_torch(options.threads)
    cuda = torch.cuda.is_available()
    vocab = common.vocab_of(options)
    tokenizer = common.make_tokenizer(vocab)
    tokenizer.padding_side = "left"
    data = make_task_splits(("arithmetic",), train_size=256, dev_size=4, test_size=4, seed=0)["train"]
    data = data.map(lambda row: {"privileged_context": row["completion"][0]["content"]})
    student = common.make_model(options.shape, vocab, tokenizer, "student", seed=0)
    if options.teacher == "copy":
        teacher = copy.deepcopy(student)
    else:
        teacher = common.make_model(options.shape, vocab, tokenizer, "teacher", seed=1)
    clock = common.Clock()

    class StepClock(TrainerCallback):
        marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(clock())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(clock())

    shared = dict(
        output_dir=f"/tmp/bench_trainers/{options.kind}-{os.getpid()}",
        per_device_train_batch_size=options.batch,
        max_completion_length=options.length,
        generation_kwargs={"min_new_tokens": options.length},
        max_steps=options.steps,
        learning_rate=1e-4,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
    )
    step_clock = StepClock()
    if options.kind == "distillation":
        rows = data.select([i for i in range(len(data)) for _ in range(options.num_generations)])
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=DistillationConfig(**shared, beta=0.5, shuffle_dataset=False),
            train_dataset=rows,
            processing_class=tokenizer,
            callbacks=[step_clock],
        )
    elif options.kind in ("ogls_sd", "ogls_sd_opsd"):

        def coin_reward(completions, **kwargs):
            return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]

        config = OGLSSDConfig.opsd if options.kind == "ogls_sd_opsd" else OGLSSDConfig
        trainer = OGLSSDTrainer(
            model=student,
            reward_funcs=coin_reward,
            args=config(**shared, num_generations=options.num_generations),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[step_clock],
        )
    else:
        rho = 1.0 if options.kind == "camopd_rho1" else 0.5
        coherence_every = 1 if options.kind == "camopd_rho05_gcg" else 0
        rows = data.select([i for i in range(len(data)) for _ in range(options.num_generations)])
        trainer = CaMOPDTrainer(
            student,
            teacher,
            CaMOPDConfig(**shared, beta=0.5, rho=rho, gradient_coherence_every=coherence_every, shuffle_dataset=False),
            rows,
            processing_class=tokenizer,
            callbacks=[step_clock],
        )
    memory = common.PeakMemory().start()
    trainer.train()
    peak = memory.stop()
    marks = step_clock.marks
    steps = [end - begin for begin, end in zip(marks[0::2], marks[1::2])][options.warmup :]
    mixed = [log[k] for log in trainer.state.log_history for k in log if k.endswith("frac_mixed_groups")]
    coherence_s = [log["coherence/seconds"] for log in trainer.state.log_history if "coherence/seconds" in log]
    return {
        "kind": options.kind,
        "vocab": vocab,
        "length": options.length,
        "batch": options.batch,
        "step_s": statistics.median(steps),
        "steps_s": steps,
        "peak_mib": peak,
        "logits_mib": options.batch * options.length * vocab * 4 / 2**20,
        "mixed_groups": statistics.mean(mixed) if mixed else None,
        # wall-clock seconds of the GCG diagnostic as the trainer logs them, median over the timed steps
        "coherence_s": statistics.median(coherence_s[options.warmup :] or coherence_s) if coherence_s else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trainer_arguments(parser, length=64, batch=8, num_generations=4, steps=4)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--teacher", choices=("copy", "separate"), default="copy")
    options = parser.parse_args(argv)
    common.emit(run(options))


if __name__ == "__main__":
    main()
