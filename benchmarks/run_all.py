"""Runs every benchmark at a real vocabulary and prints one table: measure, value, target, met / not met.

    python benchmarks/run_all.py [--quick] [--threads 1] [--out benchmarks/results] [--only scas ogls_sd ...]

Each benchmark runs as its own process with the settings below (the trainer benchmarks start one more process per
configuration, so peak memory is never shared). Torch uses `--threads` CPU threads (default 1) and CPU times are
process CPU time, which a machine shared with other jobs distorts far less than wall-clock; on CUDA the full-size
shapes run and times are wall-clock. The table is printed and written to `OUT/bench.json` and `OUT/bench.md`, with
the machine, the load average before and after, and the date. `--quick` runs the same code at toy sizes (a smoke run
of the harness, not a measurement). Designed for under 15 minutes on 2 quiet CPU cores.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_common as common  # noqa: E402


# Real vocabularies by default (the shape's: qwen3-0.6b, 151,669 ids); the growth table sweeps 32k -> 262k and
# completion lengths 128 -> 2,048.
FULL = {
    "scas": ["--length", "128", "--candidates", "16", "--batch", "8", "--rounds", "3"],
    "ogls_sd": [
        "--length", "64", "--batch", "4", "--num_generations", "4", "--steps", "3", "--rounds", "2",
        "--growth_vocabs", "32768", "151669", "262144", "--growth_lengths", "2048",
    ],
    "camopd": ["--length", "64", "--batch", "4", "--steps", "3", "--rounds", "2", "--coherence"],
    "dmc": ["--length", "64", "--train_size", "1024", "--batch", "8", "--sft_steps", "3", "--rounds", "2"],
    "pool_builder": ["--length", "32", "--prompts", "16", "--n", "2", "--rounds", "2"],
    "served_teacher": ["--length", "32", "--batch", "4", "--rounds", "3"],
    "cross_tokenizer": ["--rows", "4", "--words", "40", "--rounds", "2"],
}  # fmt: skip
QUICK = {
    "scas": ["--vocab", "4096", "--length", "16", "--candidates", "4", "--batch", "2", "--rounds", "2"],
    "ogls_sd": [
        "--vocab", "4096", "--length", "8", "--batch", "4", "--num_generations", "2", "--steps", "2", "--rounds", "1",
        "--growth_vocabs", "4096", "8192", "--growth_lengths", "16", "--growth_vocab_fixed", "4096",
        "--growth_length_fixed", "8",
    ],
    "camopd": ["--vocab", "4096", "--length", "8", "--batch", "2", "--steps", "2", "--rounds", "1", "--coherence"],
    "dmc": ["--vocab", "4096", "--length", "8", "--train_size", "16", "--sft_steps", "2", "--rounds", "1"],
    "pool_builder": ["--vocab", "4096", "--length", "8", "--prompts", "8", "--n", "1", "--shard", "4", "--rounds", "1"],
    "served_teacher": ["--vocab", "4096", "--length", "8", "--batch", "2", "--rounds", "1"],
    "cross_tokenizer": ["--quick"],
}  # fmt: skip
ORDER = ("scas", "dmc", "ogls_sd", "camopd", "pool_builder", "served_teacher", "cross_tokenizer")


def machine() -> str:
    if common.cuda():
        import torch

        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu})"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of the harness")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    options = parser.parse_args(argv)
    settings = QUICK if options.quick else FULL
    os.makedirs(options.out, exist_ok=True)

    started, load_before = time.time(), load()
    rows, durations, cpu = [], {}, {}
    for name in (n for n in ORDER if n in options.only):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            path = handle.name
        argv_ = [os.path.join(HERE, f"bench_{name}.py"), *settings[name], "--threads", str(options.threads)]
        print(f"\n=== {name}: {' '.join(argv_[1:])}", flush=True)
        begin, cpu_begin = time.time(), children_cpu()
        result = subprocess.run([sys.executable, *argv_, "--json", path], check=False)
        durations[name], cpu[name] = time.time() - begin, children_cpu() - cpu_begin
        if result.returncode != 0:
            rows.append(
                common.measure(name, "benchmark failed", float("nan"), None, None, f"exit {result.returncode}")
            )
            continue
        with open(path) as f:
            rows += json.load(f)["measures"]
        os.remove(path)

    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "threads": options.threads,
        "timing": "CUDA wall-clock" if common.cuda() else "CPU process time",
        "load_average_before": load_before,
        "load_average_after": load(),
        "quick": options.quick,
        "seconds": {**{k: round(v, 1) for k, v in durations.items()}, "total": round(time.time() - started, 1)},
        "cpu_seconds": {**{k: round(v, 1) for k, v in cpu.items()}, "total": round(sum(cpu.values()), 1)},
    }
    summary = (
        f"{header['date']}, {header['machine']}, {options.threads} torch thread(s), {header['timing']}; load average "
        f"(1/5/15 min) {load_before} before, {header['load_average_after']} after; {header['seconds']['total']:.0f} s wall-clock, "
        f"{header['cpu_seconds']['total']:.0f} s CPU (on quiet cores, one thread, the wall-clock)"
        + (" (--quick: toy sizes, not a measurement)" if options.quick else "")
    )
    print(f"\n=== summary: {summary}\n")
    common.print_measures(rows)
    with open(os.path.join(options.out, "bench.json"), "w") as f:
        json.dump({**header, "measures": rows}, f, indent=1)
    with open(os.path.join(options.out, "bench.md"), "w") as f:
        f.write(f"{summary}\n\n{common.format_table(rows, markdown=True)}\n")
    print(f"\nwritten: {os.path.join(options.out, 'bench.json')}, {os.path.join(options.out, 'bench.md')}")
    return rows


if __name__ == "__main__":
    main()
