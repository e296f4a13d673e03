"""Two real CPU processes shard the scoring: each rank scores its own half, and every rank gets the one-process result.

`PartialState()` alone does not join a multi-process run on a machine without GPUs (each process would think it is
alone and score everything); `trl_distill.core.engine.distributed_state` creates it with `cpu=True` there.
"""

import json
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def cpu_env() -> dict:
    # no GPU visible, one thread per process: the run is a two-process CPU run on any machine
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ROOT}  # fmt: skip


def test_two_cpu_processes_each_score_half_and_both_get_the_one_process_result(tmp_path):
    from multiprocess_scoring import data, run

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [os.path.join(ROOT, "tests", "multiprocess_scoring.py"), str(tmp_path)]
    result = subprocess.run(command, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["num_processes"], r["distributed_type"]) for r in ranks] == [
        (0, 2, "MULTI_CPU"),
        (1, 2, "MULTI_CPU"),
    ]
    num_rows = len(data()[0])
    # each rank ran the forward passes of its own contiguous half, and only those
    assert ranks[0]["scored"] == list(range(num_rows // 2))
    assert ranks[1]["scored"] == list(range(num_rows // 2, num_rows))

    single = run()  # this test process: one process, unsharded
    assert single["num_processes"] == 1 and single["scored"] == list(range(num_rows))
    for rank in ranks:
        assert len(rank["scas"]) == len(single["scas"]) == num_rows
        for got, want in zip(rank["scas"], single["scas"]):
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert [row["dataset"] for row in rank["dmc"]] == [row["dataset"] for row in single["dmc"]]
        for got, want in zip(rank["dmc"], single["dmc"]):
            numbers = [key for key in want if key != "dataset"]
            assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], rel=1e-5, abs=1e-6)
