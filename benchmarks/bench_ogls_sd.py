"""Step time and peak memory of OGLSSDTrainer (pooled and contextual steering) against trl.DistillationTrainer.

Same student, batch, generation length and rollouts per step in every run: `DistillationTrainer` generates one
completion per row, so its dataset repeats each prompt `num_generations` times; its teacher is a frozen copy of the
student, as OGLS-SD's `initial` teacher is. `min_new_tokens = max_completion_length` fixes the generation length.
The verifier is a coin (the parity of the completion's character codes), so about 7 groups in 8 hold both outcomes
and the steering really runs (a random tiny student never solves the arithmetic, which would leave every group
unsteered and the contextual mode free).
Every run is a fresh subprocess, so peak memory is not shared: on CUDA it is `torch.cuda.max_memory_allocated`, on
CPU the growth of the peak resident set over the set-up (`ru_maxrss` after training minus the RSS before it). Step
time is the median over the steps after warm-up: wall-clock on CUDA; on CPU the process CPU time with one torch
thread, which a machine shared with other jobs distorts far less than wall-clock. The three trainers run in
interleaved rounds and each keeps its best round.

    python benchmarks/bench_ogls_sd.py --size s --batch 8 --num_generations 4 --length 48 --steps 6

Targets (issue 5): pooled steering at most 1.3× the time and 1.1× the peak memory of the baseline.
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(name: str, options) -> dict:
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    from trl_distill.lab.models import tiny_model
    from trl_distill.lab.tasks import make_task_splits
    from trl_distill.lab.tokenizer import build_tokenizer
    from trl_distill.ogls_sd import ogls_sd_config, ogls_sd_trainer

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    data = make_task_splits(("arithmetic",), train_size=256, dev_size=4, test_size=4, seed=0)["train"]
    data = data.map(lambda row: {"privileged_context": row["completion"][0]["content"]})
    student = tiny_model(tokenizer, options.size, seed=0)
    common = dict(
        output_dir=f"/tmp/bench_ogls_sd/{name}",
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
        seed=0,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def mark(self):
            if cuda:
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter() if cuda else time.process_time())

        def on_step_begin(self, args, state, control, **kwargs):
            self.mark()

        def on_step_end(self, args, state, control, **kwargs):
            self.mark()

    def coin_reward(completions, **kwargs):
        return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]

    clock = Clock()
    if name == "distillation":
        repeated = data.select([i for i in range(len(data)) for _ in range(options.num_generations)])
        trainer = DistillationTrainer(
            model=student,
            teacher_model=copy.deepcopy(student),
            args=DistillationConfig(**common, beta=0.5, shuffle_dataset=False),
            train_dataset=repeated,
            processing_class=tokenizer,
            callbacks=[clock],
        )
    else:
        trainer = ogls_sd_trainer.OGLSSDTrainer(
            model=student,
            reward_funcs=coin_reward,
            args=ogls_sd_config.OGLSSDConfig(**common, num_generations=options.num_generations, steering=name),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[clock],
        )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        start_memory = torch.cuda.memory_allocated() / 2**20
    before = rss_mib()
    trainer.train()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        start_memory = 0.0
    steps = [end - begin for begin, end in zip(clock.marks[0::2], clock.marks[1::2])][options.warmup :]
    mixed = [
        log["steering/frac_mixed_groups"] for log in trainer.state.log_history if "steering/frac_mixed_groups" in log
    ]
    return {
        "step_s": statistics.median(steps),
        "peak_mib": peak - start_memory if cuda else peak,
        "mixed": statistics.mean(mixed) if mixed else float("nan"),
    }


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="s", choices=["xs", "s", "m", "l"])
    parser.add_argument("--batch", type=int, default=8, help="per-device train batch size (rollouts per step)")
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--length", type=int, default=48, help="generated tokens per rollout")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; each trainer keeps its best")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.only:
        print("RESULT " + json.dumps(run(options.only, options)))
        return
    results = {}
    for _ in range(options.rounds):
        for name in ("distillation", "pooled", "contextual"):
            argv = [sys.executable, __file__, "--only", name] + sys.argv[1:]
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if not lines:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT ") :])
            best = results.setdefault(name, result)
            results[name] = {key: min(best[key], result[key]) for key in ("step_s", "peak_mib")}
            results[name]["mixed"] = result["mixed"]
    base = results["distillation"]
    print(
        f"size={options.size} batch={options.batch} num_generations={options.num_generations} "
        f"length={options.length} steps={options.steps} (median of the last {options.steps - options.warmup}, best of "
        f"{options.rounds} rounds; {'CUDA wall-clock' if torch_cuda() else 'CPU process time, 1 thread'})"
    )
    print(f"{'trainer':<22}{'step (s)':>10}{'peak (MiB)':>12}{'time ×':>9}{'memory ×':>10}{'mixed groups':>14}")
    for name, label in (
        ("distillation", "DistillationTrainer"),
        ("pooled", "OGLS-SD pooled"),
        ("contextual", "OGLS-SD contextual"),
    ):
        r = results[name]
        print(
            f"{label:<22}{r['step_s']:>10.3f}{r['peak_mib']:>12.1f}{r['step_s'] / base['step_s']:>9.2f}"
            f"{r['peak_mib'] / base['peak_mib']:>10.2f}{r['mixed']:>14.2f}"
        )
    pooled = results["pooled"]
    print(
        f"pooled targets: time {pooled['step_s'] / base['step_s']:.2f}× (≤ 1.3) "
        f"memory {pooled['peak_mib'] / base['peak_mib']:.2f}× (≤ 1.1)"
    )


if __name__ == "__main__":
    main()
