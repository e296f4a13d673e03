"""Throughput of the batched SCAS scorer against the batch-1 official form and a bare forward pass.

    python benchmarks/bench_scas.py [--size s] [--prompts 32] [--batch_size 16]

Same model (random-init tiny Qwen2 of `--size`), same pool (the toy arithmetic pool, 5 candidates per prompt), same
encoded sequences for all three:

- batched: `score_features` (the engine's batches, chunked NLL, mean-vector identities);
- batch-1 official form: one candidate per forward, full logits, explicit `T×T` cosine blocks;
- bare forward: `model(...)` on the engine's batches, nothing else.

Targets: batched ≥ 8× the batch-1 form and ≤ 1.3× the time of a bare forward.
"""

import argparse
import os
import time

import torch


os.environ.setdefault("TQDM_DISABLE", "1")

from trl_distill.core.engine import score_batches  # noqa: E402
from trl_distill.core.pool import to_long_pool  # noqa: E402
from trl_distill.lab.models import tiny_model  # noqa: E402
from trl_distill.lab.tokenizer import build_tokenizer  # noqa: E402
from trl_distill.scas.scoring import encode_pool, resolve_feature_module, score_features  # noqa: E402
from trl_distill.scas.toy import toy_pool  # noqa: E402


def official_batch1(model, features, special_ids, lmbda=0.5):
    """The learning cost one candidate at a time, with explicit T×T cosine matrices (the released code's form)."""
    up_proj = resolve_feature_module(model)
    captured = []
    handle = up_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    costs = []
    model.eval()
    with torch.no_grad():
        for f in features:
            captured.clear()
            ids = torch.tensor([f["input_ids"]])
            logits = model(input_ids=ids).logits[0].float()
            nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            A = [t for t in range(1, len(ids[0])) if f["completion_mask"][t] and f["input_ids"][t] not in special_ids]
            Q = [t for t in range(1, len(ids[0])) if not f["completion_mask"][t] and f["input_ids"][t] not in special_ids]
            u = torch.nn.functional.normalize(captured[0][0].float(), dim=-1)
            sim = u @ u.T
            d_A, d_Q = nll[[t - 1 for t in A]].mean(), nll[[t - 1 for t in Q]].mean()
            AA, AQ = sim[A][:, A].mean(), sim[A][:, Q].mean()
            costs.append(((1 - lmbda) * d_A**2 * AA + lmbda * d_A * d_Q * AQ).item())
    handle.remove()
    return costs


def bare_forward(model, batch):
    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return [None] * batch.input_ids.shape[0]


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="s")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer, args.size, "qwen2", seed=0)
    features = encode_pool(tokenizer, to_long_pool(toy_pool(args.prompts)))
    n = len(features)
    pad = tokenizer.pad_token_id

    score_features(model, features[: args.batch_size], pad, batch_size=args.batch_size)  # warm-up
    t_batched, batched = timed(lambda: score_features(model, features, pad, batch_size=args.batch_size), args.repeats)
    t_bare, _ = timed(lambda: score_batches(model, features, bare_forward, pad, args.batch_size), args.repeats)
    t_single, single = timed(lambda: official_batch1(model, features, set(tokenizer.all_special_ids)), 1)
    error = max(abs(a["learning_cost"] - b) for a, b in zip(batched, single))

    print(f"model: qwen2 size {args.size}, {n} candidates ({args.prompts} prompts), batch {args.batch_size}, "
          f"{args.threads} threads")  # fmt: skip
    print(f"batched scorer        {n / t_batched:9.1f} examples/s")
    print(f"batch-1 official form {n / t_single:9.1f} examples/s")
    print(f"bare forward          {n / t_bare:9.1f} examples/s")
    print(f"speed-up over batch-1 form:      {t_single / t_batched:5.2f}x   (target >= 8x)")
    print(f"time relative to a bare forward: {t_batched / t_bare:5.2f}x   (target <= 1.3x)")
    print(f"max |S_batched - S_batch1| = {error:.2e}")


if __name__ == "__main__":
    main()
