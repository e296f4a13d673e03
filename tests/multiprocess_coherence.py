"""`streamed_gradient_coherence` in every launched gloo process; each rank writes `OUTPUT_DIR/rank<k>.json`.

    CUDA_VISIBLE_DEVICES= python -m torch.distributed.run --standalone --nproc_per_node 2 \
        tests/multiprocess_coherence.py OUTPUT_DIR

- `sharded`: as FSDP holds a model, each rank owns one contiguous piece of the flattened parameters (the cut falls
  inside a weight matrix, as FSDP's flat parameter does) and differentiates with respect to that piece only; both ranks
  see the same two batches. With `sharded=True` every rank should get the cosine of the whole gradient.
- `replicated`: as DDP holds a model, each rank owns all the parameters and its own two batches. With `sharded=False`
  every rank should get the cosine of its own gradients, not a mixture of the ranks'.

Used by `tests/test_camopd_coherence.py`, which computes both numbers by brute force in one process and compares.
"""

import json
import os
import sys

import torch


VOCAB, WIDTH = 40, 12


def model() -> torch.nn.Module:
    """A tiny language model: embedding, one tanh layer, head (seeded: the same weights on every rank)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(VOCAB, WIDTH), torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, VOCAB)
    )


def batch(seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(seed))


def lm_loss(net: torch.nn.Module, ids: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """Next-token cross-entropy of `ids`, with `params` in place of the module's own when given."""
    inputs = ids[:, :-1]
    logits = torch.func.functional_call(net, params, (inputs,)) if params is not None else net(inputs)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


SHARDED_BATCHES = (1, 2)  # recovery, review: the same on every rank


def replicated_batches(rank: int) -> tuple[int, int]:
    return 10 + rank, 20 + rank


def shard_bounds(numel: int, rank: int) -> tuple[int, int]:
    """Rank 0 owns the first 2/5 of the flat parameters, rank 1 the rest: the cut falls inside the embedding."""
    cut = numel * 2 // 5
    return (0, cut) if rank == 0 else (cut, numel)


def run() -> dict:
    from trl_distill.camopd.coherence import streamed_gradient_coherence

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    assert world_size == 2, "launch two processes"
    net = model()

    # FSDP-like: this rank's piece of the flat parameters is the leaf; the other pieces are constants
    names = [name for name, _ in net.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    start, end = shard_bounds(flat.numel(), rank)
    shard = flat[start:end].clone().requires_grad_()

    def unflatten() -> dict:
        whole = torch.cat([flat[:start], shard, flat[end:]])
        views, offset = {}, 0
        for name, p in zip(names, net.parameters()):
            views[name] = whole[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return views

    recovery, review = (batch(seed) for seed in SHARDED_BATCHES)
    sharded = streamed_gradient_coherence(
        lambda: lm_loss(net, recovery, unflatten()), lambda: lm_loss(net, review, unflatten()), [shard], sharded=True
    )
    # the same shard without the all-reduce: the cosine of this rank's piece only
    shard_only = streamed_gradient_coherence(
        lambda: lm_loss(net, recovery, unflatten()), lambda: lm_loss(net, review, unflatten()), [shard]
    )

    # DDP-like: every rank holds all the parameters, its own batches
    recovery, review = (batch(seed) for seed in replicated_batches(rank))
    replicated = streamed_gradient_coherence(
        lambda: lm_loss(net, recovery), lambda: lm_loss(net, review), list(net.parameters()), sharded=False
    )
    torch.distributed.destroy_process_group()  # a gloo group left to interpreter teardown can abort the process
    return {
        "rank": rank,
        "world_size": world_size,
        "sharded": sharded.item(),
        "shard_only": shard_only.item(),
        "replicated": replicated.item(),
    }


if __name__ == "__main__":
    result = run()
    with open(os.path.join(sys.argv[1], f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)
