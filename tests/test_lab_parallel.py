"""The lab's side-by-side runs (`lab.parallel`) and the parallel pre-training (`world.models.prebuild`)."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from trl_distill.lab.parallel import parallel_map
from trl_distill.lab.world.models import Pretraining, prebuild
from trl_distill.lab.world.tasks import make_task_splits


def test_parallel_map_runs_closures_in_one_thread_workers_and_keeps_the_order():
    offset = 10  # a closure: the forked workers inherit it

    def work(x):
        return x + offset, torch.get_num_threads(), os.getpid()

    finished = []
    results = parallel_map(work, range(5), workers=2, on_done=finished.append)
    assert [r[0] for r in results] == [10, 11, 12, 13, 14] and sorted(finished) == sorted(results)
    assert {r[1] for r in results} == {1}
    assert os.getpid() not in {r[2] for r in results} and len({r[2] for r in results}) <= 2
    done = []
    assert parallel_map(lambda x: x * 2, [1, 2], workers=1, on_done=done.append) == [2, 4]
    assert done == [2, 4]  # one worker: in this process, `on_done` after each item, with its result


def test_parallel_map_raises_a_worker_error_here():
    def work(x):
        if x == 2:
            raise ValueError(f"bad item {x}")
        return x

    with pytest.raises(ValueError, match="bad item 2"):
        parallel_map(work, range(4), workers=2)


def test_parallel_prebuild_makes_the_same_models_as_one_after_the_other(tmp_path, monkeypatch, tokenizer):
    data = make_task_splits(("arithmetic",), 16, 1, 1, seed=0, steps=2, max_value=9)["train"]

    def runs():
        first = Pretraining("first", data, 6, "xs", seed=0)
        return [first, Pretraining("second", data, 4, "xs", seed=1), Pretraining("then", data, 3, start=first.path)]

    weights = {}
    for workers in (1, 2):
        monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / f"cache-{workers}"))
        planned = runs()
        done = []
        # "then" continues from "first": built after it (loading a missing `start` would raise)
        assert (
            prebuild(tokenizer, planned, workers=workers, on_done=lambda done=done: done.append(1)) == 3 == len(done)
        )
        assert all(run.cached() for run in planned)
        assert prebuild(tokenizer, planned, workers=workers) == 0  # cached: nothing is built again
        weights[workers] = [load_file(os.path.join(run.path, "model.safetensors")) for run in planned]
    for sequential, parallel in zip(weights[1], weights[2]):
        assert sequential.keys() == parallel.keys()
        assert all(torch.equal(sequential[k], parallel[k]) for k in sequential)


def test_parallel_map_inside_a_worker_runs_there():
    def outer(x):
        return parallel_map(lambda y: (y, os.getpid()), [x, x + 1], workers=2)

    for pairs in parallel_map(outer, [0, 10], workers=2):
        assert [y for y, _ in pairs] in ([0, 1], [10, 11]) and len({pid for _, pid in pairs}) == 1


def test_a_moved_cache_keeps_the_models_that_continue_from_another(tmp_path, monkeypatch, tokenizer):
    data = make_task_splits(("arithmetic",), 8, 1, 1, seed=0, steps=2, max_value=9)["train"]

    def runs():
        first = Pretraining("first", data, 2, "xs")
        return [first, Pretraining("then", data, 2, start=first.path)]

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "here"))
    built = runs()
    assert prebuild(tokenizer, built) == 2
    assert built[1].key["start"] == "cache:" + os.path.basename(built[0].path)
    shutil.copytree(tmp_path / "here", tmp_path / "moved")
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "moved"))
    moved = runs()
    assert [run.path for run in moved] != [run.path for run in built]
    assert all(run.cached() for run in moved)  # the same cache entries, found at the new place: nothing rebuilt
    elsewhere = Pretraining("then", data, 2, start=str(tmp_path / "a-model"))  # outside the cache: the path itself
    assert elsewhere.key["start"] == str(tmp_path / "a-model")
