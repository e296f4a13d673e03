"""Overhead of build_pool over bare generation, and the cost of a resume, on the tiny world.

Runs, in one process, on the same teachers, prompts and generation settings:

- a bare loop: load each teacher, `generate_completions` over all prompts (the baseline);
- `build_pool` (loads each teacher, generates per shard, verifies, writes shards, merges, summarises);
- `build_pool` again on the finished directory (the cost of a rerun that has nothing left to do);
- `build_pool` resumed after half of the shards were deleted (should cost about half a build).

Completions are forced to the full `--length` (`min_new_tokens`) so every run generates the same number of tokens.
The baseline and the full build are each timed `--repeats` times and the fastest run is kept (shared machines are
noisy).

    python benchmarks/bench_pool_builder.py --prompts 64 --n 4 --length 32
"""

import argparse
import os
import shutil
import tempfile
import time


os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

from trl_distill.core.generation import generate_completions  # noqa: E402
from trl_distill.lab.models import tiny_model  # noqa: E402
from trl_distill.lab.tasks import make_task_splits  # noqa: E402
from trl_distill.lab.tokenizer import build_tokenizer  # noqa: E402
from trl_distill.pool.builder import build_pool  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shard", type=int, default=16)
    parser.add_argument("--size", default="xs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer = build_tokenizer()
    prompts = make_task_splits(("arithmetic",), args.prompts, 1, 1, seed=0)["train"]
    work = tempfile.mkdtemp()
    paths = []
    for seed in (0, 1):
        path = os.path.join(work, f"teacher{seed}")
        model = tiny_model(tokenizer, args.size, "llama", seed=seed)
        # every answer runs to the full length, so all runs generate the same tokens
        model.generation_config = GenerationConfig(min_new_tokens=args.length)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    settings = {"n": args.n, "verifier": "numeric", "max_new_tokens": args.length, "temperature": 1.0}
    settings |= {"batch_size": args.batch, "shard_size": args.shard, "show_progress": False}

    build_pool(paths, prompts.select(range(1)), os.path.join(work, "warmup"), **settings)  # first-call costs

    def baseline():
        for path in paths:
            model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
            generate_completions(
                model, tok, prompts["prompt"], max_new_tokens=args.length, batch_size=args.batch, do_sample=True,
                num_return_sequences=args.n, seed=0, show_progress=False,
            )  # fmt: skip

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    output_dir = os.path.join(work, "pool")
    bare, full = float("inf"), float("inf")
    for _ in range(args.repeats):
        shutil.rmtree(output_dir, ignore_errors=True)
        bare = min(bare, timed(baseline))
        full = min(full, timed(lambda: build_pool(paths, prompts, output_dir, **settings)))

    rerun = timed(lambda: build_pool(paths, prompts, output_dir, **settings))

    num_shards = -(-args.prompts // args.shard)
    for folder in sorted(os.listdir(os.path.join(output_dir, "shards"))):
        for shard in range(num_shards // 2, num_shards):
            os.remove(os.path.join(output_dir, "shards", folder, f"{shard:05d}.jsonl"))
    half = timed(lambda: build_pool(paths, prompts, output_dir, **settings))
    shutil.rmtree(work)

    answers = 2 * args.prompts * args.n
    print(f"2 teachers x {args.prompts} prompts x {args.n} answers x {args.length} tokens ({answers} answers)")
    print(f"load + generate_completions (baseline): {bare:7.2f} s")
    print(f"build_pool:                             {full:7.2f} s   ratio {full / bare:.2f}x")
    print(f"rerun of a finished pool:               {rerun:7.2f} s   ratio {rerun / bare:.3f}x")
    print(f"resume with half the shards missing:    {half:7.2f} s   ratio {half / bare:.2f}x")


if __name__ == "__main__":
    main()
