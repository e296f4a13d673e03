"""What every benchmark shares: real-vocabulary models and tokenizers, interleaved timing, fresh-process memory.

- Shapes. `--shape` names a real model's configuration (`qwen3-0.6b`, `llama-3.2-1b`, `gemma-3-1b`) with random
  weights and its real vocabulary size; on CPU the depth and width are scaled down (hidden 64, 2 layers; a teacher
  hidden 128, 4 layers), on CUDA the full configuration is built. `--vocab` overrides the vocabulary size.
- Tokenizer. The tiny world's byte-level tokenizer (`trl_distill.lab.world.tokenizer`) with filler tokens `<v123>` appended
  until it has exactly the vocabulary's size, so ASCII text encodes as before while the model samples ids from the
  whole vocabulary and every id decodes. Built offline in under a second.
- Timing. On CPU the process CPU time with a fixed number of torch threads (`--threads`, default 1): a machine shared
  with other jobs distorts it far less than wall-clock. On CUDA wall-clock after a synchronize. Every measurement is
  interleaved over rounds (baseline, method, baseline, method, …); each side keeps the median of its rounds and the
  spread of the per-round ratio, `(max - min) / median`, is printed; above 20% the result says it is unstable.
- Memory. Each configuration runs in a fresh subprocess: on CUDA `torch.cuda.max_memory_allocated` minus the memory
  allocated before the measured part; on CPU the peak resident set (`ru_maxrss`) minus the resident set before it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # the worktree's `trl_distill`, not an installed copy
    sys.path.insert(0, REPO)
for _key, _value in {
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

SPREAD_LIMIT = 0.20

# The released configurations: name -> (model_type, vocab_size, then the sizes named in FULL_SIZES, in that order).
FULL_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim")  # fmt: skip
_RELEASED = {
    "qwen3-0.6b": ("qwen3", 151_669, 1024, 3072, 28, 16, 8, 128),
    "llama-3.2-1b": ("llama", 128_256, 2048, 8192, 16, 32, 8, 64),
    "gemma-3-1b": ("gemma3_text", 262_144, 1152, 6912, 26, 4, 1, 256),
}
SHAPES = {
    name: {
        "model_type": model_type,
        "vocab_size": vocab,
        "full": dict(zip(FULL_SIZES, sizes), tie_word_embeddings=True),
    }
    for name, (model_type, vocab, *sizes) in _RELEASED.items()
}
CPU_SCALE = {
    "student": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16),
    "teacher": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, head_dim=32),
}
DEFAULT_SHAPE = "qwen3-0.6b"


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def add_common_arguments(parser, length: int, threads: int = 1) -> None:
    """`--shape`, `--vocab`, `--length`, `--threads`, `--json` (each benchmark adds its own `--rounds`, or takes
    [`make_parser`]'s)."""
    parser.add_argument("--shape", default=DEFAULT_SHAPE, choices=sorted(SHAPES), help="model configuration shape")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: the shape's real one)")
    parser.add_argument("--length", type=int, default=length, help="completion length in tokens")
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads (fixed; CPU time is measured)")
    parser.add_argument("--json", help="write the measures to this JSON file")


def make_parser(doc: str, length: int, batch: int, rounds: int) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring as the help, the common arguments ([`add_common_arguments`]), `--batch`
    and `--rounds` (the interleaved rounds; each side keeps its median)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, length=length)
    parser.add_argument("--batch", type=int, default=batch, help="sequences per batch")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds; each side keeps its median")
    return parser


def vocab_of(options) -> int:
    return options.vocab or SHAPES[options.shape]["vocab_size"]


def setup_torch(threads: int) -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads)


def make_tokenizer(vocab_size: int):
    """The lab's byte-level tokenizer padded with filler tokens `<v{i}>` to exactly `vocab_size` ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from trl_distill.lab.world.tokenizer import BOS_TURN, CHAT_TEMPLATE, EOS, PAD, build_tokenizer

    base = build_tokenizer()
    spec = json.loads(base.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    if vocab_size < len(vocab):
        raise ValueError(f"--vocab must be at least {len(vocab)} (the byte-level base), got {vocab_size}.")
    vocab.update({f"<v{i}>": i for i in range(len(vocab), vocab_size)})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        pad_token=PAD,
        eos_token=EOS,
        additional_special_tokens=[BOS_TURN],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    return tokenizer


def make_model(shape: str, vocab_size: int, tokenizer, role: str = "student", seed: int = 0, full: bool | None = None):
    """A random-init causal LM of `shape` with `vocab_size` ids; scaled down (by `role`) unless `full` (CUDA)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = SHAPES[shape]
    full = cuda() if full is None else full
    settings = dict(spec["full"])
    if not full:
        settings.update(CPU_SCALE[role], num_key_value_heads=min(2, settings["num_key_value_heads"]))
    config = AutoConfig.for_model(
        spec["model_type"],
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **settings,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if full:
        model = model.to("cuda", torch.bfloat16)
    return model


def shape_label(options) -> str:
    scale = "full size" if cuda() else "scaled down (student hidden 64 x 2 layers)"
    return f"shape {options.shape} ({scale}), vocabulary {vocab_of(options):,}, completion length {options.length}"


class Clock:
    """CPU process time on CPU, synchronized wall-clock on CUDA."""

    def __init__(self):
        self.cuda = cuda()

    def __call__(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def time_once(fn, clock=None) -> float:
    clock = clock or Clock()
    start = clock()
    fn()
    return clock() - start


def interleaved(setups: dict, rounds: int, clock=None) -> dict[str, list[float]]:
    """Seconds of each `setups[name]()` in every round, the setups run in turn inside a round."""
    times = {name: [] for name in setups}
    for _ in range(rounds):
        for name, fn in setups.items():
            times[name].append(time_once(fn, clock))
    return times


def ratio_of(method: list[float], baseline: list[float]) -> tuple[float, float]:
    """Median(method) / median(baseline) and the spread of the per-round ratios, `(max - min) / median`."""
    per_round = [m / b for m, b in zip(method, baseline)]
    return statistics.median(method) / statistics.median(baseline), spread(per_round)


def spread(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("inf")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory of what runs between `start()` and `stop()` in this process, in MiB."""

    def start(self):
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2**20
        else:
            self.before = rss_mib()
        return self

    def stop(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20 - self.before
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self.before


def fresh(script: str, argv: list[str], timeout: float | None = None) -> dict:
    """Runs `script argv` in a new Python process and returns the dict it printed as `RESULT {json}`."""
    out = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, check=False, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(argv)} failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def measure(
    benchmark: str, name: str, value: float, target: str | None = None, spread_: float | None = None, note: str = ""
) -> dict:
    """One row of the final table; `target` like `"<= 1.3"` or `">= 4"` (None: reported, no target)."""
    met = None
    if target is not None:
        op, bound = target.split()
        met = value <= float(bound) if op == "<=" else value >= float(bound)
    if spread_ is not None and spread_ > SPREAD_LIMIT:
        note = (note + "; " if note else "") + f"unstable: spread {spread_:.0%} > {SPREAD_LIMIT:.0%}"
    return {
        "benchmark": benchmark,
        "measure": name,
        "value": value,
        "target": target,
        "met": met,
        "spread": spread_,
        "note": note,
    }


def verdict(row: dict) -> str:
    return "—" if row["met"] is None else ("met" if row["met"] else "NOT MET")


def print_measures(rows: list[dict]) -> None:
    print(format_table(rows, markdown=False))


def format_table(rows: list[dict], markdown: bool = False) -> str:
    header = ["benchmark", "measure", "value", "target", "spread", "verdict", "note"]
    body = [
        [
            r["benchmark"],
            r["measure"],
            f"{r['value']:.3g}",
            r["target"] or "—",
            "—" if r["spread"] is None else f"{r['spread']:.0%}",
            verdict(r),
            r["note"],
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in body]
    return "\n".join(lines)


def report(options, rows: list[dict], extra: dict | None = None) -> list[dict]:
    """Ends a benchmark: a blank line, the measures' table, and the measures (and `extra`) written to `--json`;
    returns `rows`."""
    print()
    print_measures(rows)
    write_measures(options.json, rows, extra)
    return rows


def write_measures(path: str | None, rows: list[dict], extra: dict | None = None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump({"measures": rows, **(extra or {})}, f, indent=1)
