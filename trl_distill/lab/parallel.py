"""Independent lab runs side by side: forked worker processes, one CPU thread each.

A tiny model does not keep two CPU threads busy, so on a 2-core CPU two runs in two one-thread processes finish sooner
than one after the other on two threads (`make demo`'s times before and after are in docs/lab.md). The numbers stay: pre-training and SFT give
bitwise the same weights at any thread count (`tests/test_lab_parallel.py` checks a parallel build against a
sequential one); a full default lab run gave the same accuracies and verdicts both ways, with a few logged losses
differing in the seventh digit (a reduction whose order depends on the thread count).
"""

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from . import progress


_TASK: tuple | None = None  # (fn, items) of the running `parallel_map`, inherited by the forked workers
_IN_WORKER = False


def _one_thread() -> None:
    global _IN_WORKER
    _IN_WORKER = True  # a `parallel_map` inside a worker runs its items there, one after the other
    torch.set_num_threads(1)
    progress.QUIET = True  # the parent shows the phase's bar; workers draw none
    progress.silence_other_bars()


def _call(index: int):
    fn, items = _TASK
    return fn(items[index])


def parallel_map(fn: Callable, items: Sequence, workers: int, on_done: Callable | None = None) -> list:
    """`[fn(item) for item in items]`, in up to `workers` forked processes (one CPU thread each), in order.

    `fn` may be a closure: the workers are forked, so they inherit it and `items`; only indices and the results
    (which must pickle) cross between processes. `fn` must return what it computes: what it changes in place in a
    worker is lost. With `workers <= 1`, one item, or inside a worker, everything runs here, in this process.
    `on_done(result)` is called here as each item finishes.
    """
    global _TASK
    items = list(items)
    if workers <= 1 or len(items) <= 1 or _IN_WORKER:
        results = []
        for item in items:
            results.append(fn(item))
            if on_done is not None:
                on_done(results[-1])
        return results
    _TASK = (fn, items)
    results = [None] * len(items)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(_call, i): i for i in range(len(items))}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done is not None:
                    on_done(results[futures[future]])
    finally:
        _TASK = None
    return results
