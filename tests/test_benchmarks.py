"""The benchmark harness (benchmarks/): its helpers, and each benchmark at its smallest size. Nothing here is timed.

The fast cases run by default; the trainer, DMC and pool-builder benchmarks build trainers and are marked `slow`.
"""

import json
import math
import os
import sys

import pytest
import torch


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_common as common  # noqa: E402


def test_padded_tokenizer_has_the_vocabulary_size_and_keeps_the_byte_ids():
    from trl_distill.lab.world.tokenizer import build_tokenizer

    tokenizer = common.make_tokenizer(300)
    assert len(tokenizer) == 300
    text = "<|im_start|>user\n12+30=?"
    assert tokenizer(text)["input_ids"] == build_tokenizer()(text)["input_ids"]
    assert tokenizer.decode([299]) == "<v299>"
    with pytest.raises(ValueError, match="at least 259"):
        common.make_tokenizer(100)


@pytest.mark.parametrize("shape", sorted(common.SHAPES))
def test_scaled_down_shape_has_the_requested_vocabulary(shape):
    tokenizer = common.make_tokenizer(512)
    model = common.make_model(shape, 512, tokenizer, "student", full=False)
    assert model.config.model_type == common.SHAPES[shape]["model_type"]
    assert model.config.vocab_size == 512 and model.config.hidden_size == 64
    logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, 512)


def test_measure_verdicts_and_spread():
    assert common.measure("b", "m", 1.2, "<= 1.3")["met"] is True
    assert common.measure("b", "m", 1.4, "<= 1.3")["met"] is False
    assert common.measure("b", "m", 3.0, ">= 4")["met"] is False
    assert common.measure("b", "m", 3.0, None)["met"] is None
    assert "unstable" in common.measure("b", "m", 1.0, "<= 1.3", 0.25)["note"]
    assert "unstable" not in common.measure("b", "m", 1.0, "<= 1.3", 0.15)["note"]
    # per-round ratios 2.0, 1.5, 3.0: median 2.0, spread (3.0 - 1.5) / 2.0; ratio of medians 4.0 / 2.0
    ratio, spread = common.ratio_of([4.0, 3.0, 3.0 * 3], [2.0, 2.0, 3.0])
    assert ratio == pytest.approx(4.0 / 2.0)
    assert spread == pytest.approx(0.75)


def test_scas_benchmark_smallest(tmp_path):
    import bench_scas

    out = tmp_path / "scas.json"
    argv = ["--vocab", "512", "--length", "6", "--prompt_length", "6", "--candidates", "3", "--batch", "2"]
    rows = bench_scas.main([*argv, "--rounds", "2", "--json", str(out)])
    assert [r["measure"] for r in rows][0] == "scoring time / bare forward"
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in rows)
    assert json.loads(out.read_text())["measures"] == rows


def test_random_features_lengths_and_masks():
    import bench_scas

    features = bench_scas.random_features(5, 8, 20, 1000, seed=1)
    for f in features:
        n_answer = sum(f["completion_mask"])
        assert 15 < n_answer <= 20 and 6 < len(f["input_ids"]) - n_answer <= 8
        assert all(3 <= i < 1000 for i in f["input_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["distillation", "ogls_sd", "ogls_sd_opsd", "camopd_rho05", "camopd_rho05_gcg"])
def test_trainer_run_smallest(kind):
    import argparse

    import bench_trainers

    options = argparse.Namespace(
        kind=kind, shape="qwen3-0.6b", vocab=512, length=4, batch=4, num_generations=2, steps=2, warmup=1,
        threads=1, teacher="separate" if kind.startswith("camopd") else "copy",
    )  # fmt: skip
    result = bench_trainers.run(options)
    assert result["step_s"] > 0 and len(result["steps_s"]) == 1
    assert result["logits_mib"] == pytest.approx(4 * 4 * 512 * 4 / 2**20)
    assert math.isfinite(result["peak_mib"])
    assert (result["coherence_s"] is not None) == kind.endswith("_gcg")  # the diagnostic ran on the timed steps


@pytest.mark.slow
def test_dmc_and_pool_builder_benchmarks_smallest():
    import bench_dmc
    import bench_pool_builder

    rows = bench_dmc.main(
        ["--vocab", "512", "--length", "4", "--train_size", "8", "--sft_steps", "2", "--rounds", "1"]
    )
    assert rows[0]["target"] == "<= 0.1" and rows[0]["value"] > 0
    argv = ["--vocab", "512", "--length", "4", "--prompts", "4", "--n", "1", "--shard", "2", "--rounds", "1"]
    rows = bench_pool_builder.main(argv)
    assert all(r["value"] > 0 for r in rows)


def test_served_teacher_benchmark_smallest():
    import bench_served_teacher

    argv = ["--vocab", "512", "--length", "4", "--batch", "2", "--rounds", "1", "--wire_ks", "1", "20"]
    rows = bench_served_teacher.main(argv)
    assert [r["measure"] for r in rows] == [
        "served (k=20) / in-process step time",
        "JSON / compact bytes per position, k=1",
        "JSON / compact bytes per position, k=20",
    ]
    assert rows[0]["value"] > 0 and rows[2]["target"] == ">= 5" and rows[2]["met"]
