"""Overhead of build_pool over bare generation, and the cost of a resume, at a real vocabulary.

Two random-init teachers of `--shape` (real vocabulary, scaled down on CPU; see `bench_common`) saved with the
real-vocabulary tokenizer; the toy arithmetic prompts. Runs, in one process, on the same teachers, prompts and
generation settings:

- a bare loop: load each teacher, `generate_completions` over all prompts (the baseline);
- `build_pool` (loads each teacher, generates per shard, verifies, writes shards, merges, summarises);
- `build_pool` again on the finished directory (the cost of a rerun that has nothing left to do);
- `build_pool` resumed after half of the shards were deleted (should cost about half a build).

Completions are forced to the full `--length` (`min_new_tokens`) so every run generates the same number of tokens.
The baseline and the full build run interleaved over `--rounds` rounds; each keeps its median round and the spread of
the per-round ratio is printed. No target (issue 18 sets none); the ratio is reported.

    python benchmarks/bench_pool_builder.py [--shape qwen3-0.6b] [--vocab V] [--length 32] [--prompts 32] [--n 2]
"""

import os
import shutil
import statistics
import sys
import tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402


def main(argv=None):
    parser = common.make_parser(__doc__, length=32, batch=16, rounds=2)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--shard", type=int, default=8)
    options = parser.parse_args(argv)
    common.setup_torch(options.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from trl_distill.core.generation import generate_completions
    from trl_distill.lab.world.tasks import make_task_splits
    from trl_distill.pool.builder import build_pool

    vocab = common.vocab_of(options)
    tokenizer = common.make_tokenizer(vocab)
    prompts = make_task_splits(("arithmetic",), options.prompts, 1, 1, seed=0)["train"]
    work = tempfile.mkdtemp()
    paths = []
    for seed in (0, 1):
        path = os.path.join(work, f"teacher{seed}")
        model = common.make_model(options.shape, vocab, tokenizer, "student", seed=seed)
        # every answer runs to the full length, so all runs generate the same tokens
        model.generation_config = GenerationConfig(min_new_tokens=options.length)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    settings = {"n": options.n, "verifier": "numeric", "max_new_tokens": options.length, "temperature": 1.0}
    settings |= {"batch_size": options.batch, "shard_size": options.shard, "show_progress": False}

    build_pool(paths, prompts.select(range(1)), os.path.join(work, "warmup"), **settings)  # first-call costs
    output_dir = os.path.join(work, "pool")

    def baseline():
        for path in paths:
            model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
            generate_completions(
                model, tok, prompts["prompt"], max_new_tokens=options.length, batch_size=options.batch,
                do_sample=True, num_return_sequences=options.n, seed=0, show_progress=False,
            )  # fmt: skip

    def full_build():
        shutil.rmtree(output_dir, ignore_errors=True)
        build_pool(paths, prompts, output_dir, **settings)

    clock = common.Clock()
    times = common.interleaved({"baseline": baseline, "build": full_build}, options.rounds, clock)
    rerun = common.time_once(lambda: build_pool(paths, prompts, output_dir, **settings), clock)
    num_shards = -(-options.prompts // options.shard)
    for folder in sorted(os.listdir(os.path.join(output_dir, "shards"))):
        for shard in range(num_shards // 2, num_shards):
            os.remove(os.path.join(output_dir, "shards", folder, f"{shard:05d}.jsonl"))
    half = common.time_once(lambda: build_pool(paths, prompts, output_dir, **settings), clock)
    shutil.rmtree(work)

    bare = statistics.median(times["baseline"])
    ratio, ratio_spread = common.ratio_of(times["build"], times["baseline"])
    answers = 2 * options.prompts * options.n
    print(
        f"pool builder: {common.shape_label(options)}, 2 teachers x {options.prompts} prompts x {options.n} answers "
        f"({answers} answers), median of {options.rounds} interleaved rounds, "
        f"{'CUDA wall-clock' if common.cuda() else f'CPU process time, {options.threads} thread(s)'}"
    )
    print(
        f"  load + generate_completions (baseline): {bare:7.2f} s   rounds: "
        + " ".join(f"{t:.2f}" for t in times["baseline"])
    )
    print(f"  build_pool:                             {statistics.median(times['build']):7.2f} s   ratio {ratio:.2f}x")
    print(f"  rerun of a finished pool:               {rerun:7.2f} s   ratio {rerun / bare:.3f}x")
    print(f"  resume with half the shards missing:    {half:7.2f} s   ratio {half / bare:.2f}x")
    rows = [
        common.measure("pool_builder", "build_pool / load + generate", ratio, None, ratio_spread),
        common.measure(
            "pool_builder", "resume (half the shards) / load + generate", half / bare, None, None, "one run"
        ),
    ]
    return common.report(options, rows)


if __name__ == "__main__":
    main()
