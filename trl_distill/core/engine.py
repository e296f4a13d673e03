"""The forward-only scoring engine shared by SCAS, DMC and the pool builder.

`score_batches` runs a per-batch function over encoded sequences without gradients, in eval mode (restored
afterwards), with a progress bar. Under several processes each rank scores a contiguous shard and the results are
gathered, so every rank returns the same list in the input order. Every rank runs the same number of forward calls
(short shards repeat their last item), which DeepSpeed ZeRO-3 needs to gather parameters in lockstep.
"""

import logging
import math
import os
from collections.abc import Callable, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from .logprobs import SequenceBatch


logger = logging.getLogger(__name__)


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.is_available()
    return torch.cuda.is_available()


_warned_unsharded = False


def distributed_state() -> PartialState:
    """The process group the scoring, ranking and pool-building functions shard over.

    `PartialState()` alone only joins a multi-process run on GPUs: on a machine without an accelerator, under
    `torchrun --nproc_per_node 2` or `accelerate launch --multi_gpu --num_processes 2`, each process would see itself
    as the only one and score everything. When several processes are launched (`WORLD_SIZE > 1`) and there is no
    accelerator (or `ACCELERATE_USE_CPU` is set, as by `accelerate launch --cpu`), the state is created with
    `cpu=True`, which makes it a gloo `MULTI_CPU` group. A single process, or a GPU machine, gets `PartialState()`
    unchanged. Note that `accelerate launch --cpu --num_processes 2` starts *one* process (accelerate's simple
    launcher); launch CPU processes with `torchrun` or `accelerate launch --multi_gpu`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    if PartialState._shared_state:  # already set up (e.g. by a trainer's Accelerator): join it as it is
        state = PartialState()
        global _warned_unsharded
        if world_size > 1 and state.num_processes == 1 and not _warned_unsharded:
            _warned_unsharded = True
            logger.warning(
                "WORLD_SIZE=%d but the accelerate state was created for one process (PartialState() without "
                "cpu=True on a machine without GPUs): every process scores every row. Create it with "
                "PartialState(cpu=True) or call trl_distill.core.engine.distributed_state() first.",
                world_size,
            )
        return state
    return PartialState(cpu=world_size > 1 and (use_cpu or not _has_accelerator()))


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def shard_indices(n: int, process_index: int, num_processes: int) -> list[int]:
    """This process's indices of `n` sequences: a contiguous block, padded by repeating an index so that every
    process runs the same number of forward passes (a repeat writes the same result to the index it repeats)."""
    per_rank = math.ceil(n / num_processes) if n else 0
    shard = list(range(process_index * per_rank, min(n, (process_index + 1) * per_rank)))
    if shard and len(shard) < per_rank:  # equal forward counts on every rank
        shard += [shard[-1]] * (per_rank - len(shard))
    elif not shard and per_rank:
        shard = [n - 1] * per_rank
    return shard


def score_batches(
    model,
    features: Sequence[dict],
    fn: Callable[[object, SequenceBatch], list],
    pad_token_id: int,
    batch_size: int = 16,
    padding_side: str = "right",
    desc: str = "scoring",
    sort_by_length: bool = True,
) -> list:
    """Applies `fn(model, batch) -> list` (one result per sequence) over `features`, sharded over processes.

    Args:
        model: the model to score with; put in eval mode for the call and restored after.
        features (`Sequence[dict]`): encoded sequences (see [`encode_prompt_completion`]).
        fn (`Callable`): computes one picklable result per sequence of a [`SequenceBatch`].
        pad_token_id (`int`): the padding id.
        batch_size (`int`, defaults to 16): sequences per forward pass.
        padding_side (`str`, defaults to `"right"`): results must not depend on it; it is a knob for tests.
        desc (`str`): progress-bar label.
        sort_by_length (`bool`, defaults to `True`): batch similar lengths together to waste less padding.

    Returns:
        `list`: `fn`'s results in the order of `features`, identical on every process.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    state = distributed_state()
    n = len(features)
    shard = shard_indices(n, state.process_index, state.num_processes)
    order = sorted(range(len(shard)), key=lambda i: len(features[shard[i]]["input_ids"])) if sort_by_length else None
    order = order or list(range(len(shard)))

    was_training = model.training
    model.eval()
    device = model_device(model)
    local: list = [None] * len(shard)
    try:
        with torch.no_grad():
            # Passing `disable` only off the main process keeps TQDM_DISABLE working on it.
            bar_kwargs = {} if state.is_local_main_process else {"disable": True}
            for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, **bar_kwargs):
                picked = order[start : start + batch_size]
                batch = SequenceBatch.collate([features[shard[i]] for i in picked], pad_token_id, padding_side)
                for i, result in zip(picked, fn(model, batch.to(device))):
                    local[i] = result
    finally:
        model.train(was_training)

    if state.num_processes == 1:
        return local[:n]
    gathered = gather_object([(shard[i], local[i]) for i in range(len(shard))])
    results: list = [None] * n
    for index, result in gathered:
        results[index] = result
    return results
