"""The pre-trained tiny-world models shipped in the package (`python -m trl_distill.lab.ship`): complete, used
instead of training, and still what the pre-training makes."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from trl_distill.lab import ship
from trl_distill.lab.world import models
from trl_distill.lab.world.models import SHIPPED_DIR, prebuild


def shipped_weights(run) -> dict:
    return load_file(os.path.join(SHIPPED_DIR, os.path.basename(run.path), "model.safetensors"))


def cached_weights(run) -> dict:
    return load_file(os.path.join(run.path, "model.safetensors"))


def test_every_model_of_the_default_and_quick_presets_is_shipped_and_nothing_else(tmp_path):
    keys = {
        os.path.basename(run.path)
        for preset in ("default", "quick")
        for run in ship.preset_runs(preset, str(tmp_path))
    }
    assert len(keys) == 22  # 11 models per preset (the DMC student among them)
    shipped = set(os.listdir(SHIPPED_DIR))
    missing, stale = sorted(keys - shipped), sorted(shipped - keys)
    assert not missing and not stale, (
        f"shipped models out of date (missing {missing}, unused {stale}): run `python -m trl_distill.lab.ship`"
    )
    for key in keys:  # each entry holds the key that names it
        with open(os.path.join(SHIPPED_DIR, key, "lab_key.json")) as f:
            assert key.startswith(json.load(f)["name"] + "-")


def test_a_shipped_model_is_copied_into_the_cache_without_training(tmp_path, monkeypatch, tokenizer):
    def no_training(*args, **kwargs):
        raise AssertionError("a shipped model was pre-trained")

    monkeypatch.setattr(models, "pretrain", no_training)
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    # the student, and an identity teacher that continues from it: both shipped, so neither trains
    runs = [run for run in ship.preset_runs("quick", str(tmp_path)) if run.name in ("lab-student", "lab-identity-0")]
    assert len(runs) == 2 and all(run.shipped() and not run.cached() for run in runs)
    assert prebuild(tokenizer, runs, workers=2) == 2
    for run in runs:
        assert run.cached() and os.path.exists(os.path.join(run.path, "tokenizer.json"))
        got, want = cached_weights(run), shipped_weights(run)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # without the shipped layer the same model is pre-trained (here: refused)
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("TRL_DISTILL_SHIPPED_MODELS", "0")
    with pytest.raises(AssertionError, match="was pre-trained"):
        runs[0].build(tokenizer)


def test_pretraining_still_reproduces_the_cheapest_shipped_model(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))  # before the runs: their paths lie in it
    monkeypatch.setenv("TRL_DISTILL_SHIPPED_MODELS", "0")  # what the ship script does: train, ignore the package's
    runs = ship.preset_runs("quick", str(tmp_path))
    cheapest = min((run for run in runs if run.start is None), key=lambda run: run.cost())
    assert prebuild(tokenizer, [cheapest]) == 1
    got, want = cached_weights(cheapest), shipped_weights(cheapest)
    assert got.keys() == want.keys()
    # bitwise on the machine that made them; other CPUs' kernels may move the last digits
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst < 1e-4, f"{cheapest.name}: weights differ by up to {worst:.2e} from the shipped ones"
