"""The scoring command: per-candidate scores and the selected dataset, in one process and sharded over two."""

import json
import os
import subprocess
import sys

import pytest
from datasets import load_dataset

from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.toys import toy_pool
from trl_distill.scas.scoring import scas_scores
from trl_distill.scripts.scas_score import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("scas_cli")
    model = tiny_model(tokenizer, "xs", "llama", seed=2)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    pool = toy_pool(num_prompts=5, styles=("cot", "terse", "equation"))
    pool.to_json(str(root / "pool.jsonl"))
    return root, model, pool


def test_cli_writes_scores_and_selection(setup, tokenizer):
    root, model, pool = setup
    summary = main(
        ["--model", str(root / "model"), "--pool", str(root / "pool.jsonl"), "--output_dir", str(root / "one")]
    )
    scores = load_dataset("json", data_files=str(root / "one" / "scores.jsonl"), split="train")
    selected = load_dataset("json", data_files=str(root / "one" / "selected.jsonl"), split="train")
    expected = scas_scores(model, tokenizer, pool)
    assert scores["learning_cost"] == pytest.approx([s["learning_cost"] for s in expected], abs=1e-5)
    assert len(selected) == summary["selected"] == 5
    assert set(selected.column_names) >= {"prompt", "completion", "teacher", "answer"}
    # the selected answer of each prompt is its cheapest correct one
    for prompt_id in range(5):
        rows = [r for r in scores if r["prompt_id"] == prompt_id and r["correct"]]
        best = min(rows, key=lambda r: (r["learning_cost"], r["teacher"]))
        assert [r["selected"] for r in rows].count(True) == 1 and best["selected"]
    assert not any(r["selected"] for r in scores if not r["correct"])
    with open(root / "one" / "summary.json") as f:
        assert json.load(f)["teacher_share"] == summary["teacher_share"]


def test_cli_under_two_processes_matches_one(setup):
    root, _, _ = setup
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trl_distill.scripts.scas_score",
        "--model", str(root / "model"), "--pool", str(root / "pool.jsonl"), "--output_dir", str(root / "two"),
        "--batch_size", "3", "--format", "parquet",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=240)
    if not (root / "one" / "scores.jsonl").exists():
        main(["--model", str(root / "model"), "--pool", str(root / "pool.jsonl"), "--output_dir", str(root / "one")])
    one = load_dataset("json", data_files=str(root / "one" / "scores.jsonl"), split="train")
    two = load_dataset("parquet", data_files=str(root / "two" / "scores.parquet"), split="train")
    assert two["learning_cost"] == pytest.approx(one["learning_cost"], abs=1e-5)
    assert two["selected"] == one["selected"]
