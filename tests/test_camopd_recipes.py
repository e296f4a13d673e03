"""CaMOPD recipes parse into the config, and the example script runs on the tiny world."""

import os

import pytest
from recipe_helpers import parse_recipe, recipes_dir, train_example_on_toy

from trl_distill.camopd.camopd_config import CaMOPDConfig


RECIPES = recipes_dir("camopd")


@pytest.mark.parametrize("recipe", sorted(os.listdir(RECIPES)))
def test_recipe_parses_into_config(recipe, tmp_path):
    _, config, _ = parse_recipe("camopd", CaMOPDConfig, recipe, tmp_path)
    assert isinstance(config, CaMOPDConfig)
    assert config.schedule == "alternating" and config.review_every == 3 and config.rho == 0.5
    assert config.beta == 1.0


@pytest.mark.slow  # about a minute on 2 shared cores; test_camopd.py trains the same two-teacher setup faster
def test_example_runs_on_the_tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    flags = ["--model_name_or_path", "lab:camopd_student?pretrain_steps=3"]
    flags += ["--general_teacher", "lab:camopd_general_teacher?pretrain_steps=3"]
    flags += ["--max_steps", "2", "--max_completion_length", "4", "--per_device_train_batch_size", "2"]
    train_example_on_toy("camopd", CaMOPDConfig, tmp_path / "out", *flags, "--gradient_coherence_every", "0")
    assert os.path.exists(tmp_path / "out" / "model.safetensors")
