"""Throughput of the batched SCAS scorer against the batch-1 released form and a bare forward pass.

    python benchmarks/bench_scas.py [--shape qwen3-0.6b] [--vocab V] [--length 128] [--candidates 16] [--batch 8]

Same model (random-init, `--shape` with its real vocabulary; see `bench_common`), same candidates (random token ids:
a `--prompt_length` prompt and a `--length` answer each, generated directly, no tokenizer), for all three:

- batched: `score_features` (the engine's batches, TRL's chunked log-probabilities, mean-vector identities);
- batch-1 released form: one candidate per forward, full `(T, V)` logits and log-softmax, explicit `T×T` cosine blocks;
- bare forward: `model(...)` on the engine's batches (full logits), nothing else.

The three run interleaved over `--rounds` rounds; each keeps its median round. Targets: batched ≤ 1.3× the time of a
bare forward, and ≥ 4× (CPU) / ≥ 8× (CUDA) faster than the batch-1 form. `--profile` prints where the batched
scorer's time goes (`torch.profiler`).
"""

import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402
import torch  # noqa: E402

from trl_distill.core.engine import model_device, score_batches  # noqa: E402
from trl_distill.scas.scoring import resolve_feature_module, score_features  # noqa: E402


PAD = 0


def random_features(n: int, prompt_length: int, length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """`n` candidates of random ids in `[3, vocab_size)`: prompt then answer, lengths varying by up to 25%."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for _ in range(n):
        p = prompt_length - int(torch.randint(0, max(1, prompt_length // 4), (1,), generator=generator))
        a = length - int(torch.randint(0, max(1, length // 4), (1,), generator=generator))
        ids = torch.randint(3, vocab_size, (p + a,), generator=generator).tolist()
        features.append({"input_ids": ids, "completion_mask": [0] * p + [1] * a, "special_mask": [0] * (p + a)})
    return features


def released_batch1(model, features, lmbda=0.5):
    """The learning cost one candidate at a time, with full logits and explicit T×T cosine matrices."""
    up_proj = resolve_feature_module(model)
    captured = []
    handle = up_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    costs = []
    model.eval()
    device = model_device(model)
    with torch.no_grad():
        for f in features:
            captured.clear()
            ids = torch.tensor([f["input_ids"]], device=device)
            logits = model(input_ids=ids).logits[0].float()
            nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            # position 0 leaves the NLL means only (nothing predicts it); the features drop only special tokens
            A = [t for t in range(len(ids[0])) if f["completion_mask"][t] and not f["special_mask"][t]]
            Q = [t for t in range(len(ids[0])) if not f["completion_mask"][t] and not f["special_mask"][t]]
            u = torch.nn.functional.normalize(captured[0][0].float(), dim=-1)
            sim = u @ u.T
            d_A, d_Q = nll[[t - 1 for t in A if t]].mean(), nll[[t - 1 for t in Q if t]].mean()
            AA, AQ = sim[A][:, A].mean(), sim[A][:, Q].mean()
            costs.append(((1 - lmbda) * d_A**2 * AA + lmbda * d_A * d_Q * AQ).item())
    handle.remove()
    return costs


def bare_forward(model, batch):
    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return [None] * batch.input_ids.shape[0]


def main(argv=None):
    parser = common.make_parser(__doc__, length=128, batch=8, rounds=3)
    parser.add_argument("--prompt_length", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one batched call")
    options = parser.parse_args(argv)
    common.setup_torch(options.threads)
    vocab = common.vocab_of(options)

    tokenizer = common.make_tokenizer(vocab)
    model = common.make_model(options.shape, vocab, tokenizer)
    features = random_features(options.candidates, options.prompt_length, options.length, vocab)

    results = {}

    def batched():
        results["batched"] = score_features(model, features, PAD, batch_size=options.batch)

    def single():
        results["single"] = released_batch1(model, features)

    def bare():
        score_batches(model, features, bare_forward, PAD, options.batch)

    score_features(model, features[: options.batch], PAD, batch_size=options.batch)  # warm-up
    released_batch1(model, features[:1])
    if options.profile:
        from torch.profiler import profile

        with profile() as profiler:
            score_features(model, features, PAD, batch_size=options.batch)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    times = common.interleaved({"bare": bare, "batched": batched, "single": single}, options.rounds)
    error = max(abs(a["learning_cost"] - b) / max(1.0, abs(b)) for a, b in zip(results["batched"], results["single"]))
    over_bare, spread_bare = common.ratio_of(times["batched"], times["bare"])
    speedup, spread_single = common.ratio_of(times["single"], times["batched"])
    n = len(features)

    print(
        f"SCAS scoring: {common.shape_label(options)}, {n} candidates (prompt ~{options.prompt_length} tokens), "
        f"batch {options.batch}, median of {options.rounds} interleaved rounds, {options.threads} thread(s)"
    )
    for name, label in (("batched", "batched scorer"), ("single", "batch-1 released form"), ("bare", "bare forward")):
        median = sorted(times[name])[len(times[name]) // 2]
        print(f"  {label:<22} {n / median:9.1f} candidates/s   rounds: " + " ".join(f"{t:.2f}s" for t in times[name]))
    print(f"  max relative |S_batched - S_batch1| = {error:.2e}")
    if error > 1e-3:
        sys.exit("the batched scorer disagrees with the batch-1 form")
    floor = 8 if common.cuda() else 4
    rows = [
        common.measure("scas", "scoring time / bare forward", over_bare, "<= 1.3", spread_bare),
        common.measure("scas", f"speed-up over batch-1 form (V={vocab:,})", speedup, f">= {floor}", spread_single),
    ]
    common.print_measures(rows)
    common.write_measures(options.json, rows)
    return rows


if __name__ == "__main__":
    main()
