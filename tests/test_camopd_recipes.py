"""CaMOPD recipes parse into the config, and the example script runs on the tiny world."""

import importlib.util
import os

import pytest
from trl import ModelConfig, TrlParser

from trl_distill.camopd.camopd_config import CaMOPDConfig


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes", "camopd")


def load_example():
    spec = importlib.util.spec_from_file_location("camopd_example", os.path.join(ROOT, "examples", "camopd.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("recipe", sorted(os.listdir(RECIPES)))
def test_recipe_parses_into_config(recipe, tmp_path):
    example = load_example()
    parser = TrlParser((example.make_parser().dataclass_types[0], CaMOPDConfig, ModelConfig))
    overrides = ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    _, config, _ = parser.parse_args_and_config(args=["--config", os.path.join(RECIPES, recipe), *overrides])
    assert isinstance(config, CaMOPDConfig)
    assert config.schedule == "alternating" and config.review_every == 3 and config.rho == 0.5
    assert config.beta == 1.0


@pytest.mark.slow  # about a minute on 2 shared cores; test_camopd.py trains the same two-teacher setup faster
def test_example_runs_on_the_tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    example = load_example()
    parser = TrlParser((example.make_parser().dataclass_types[0], CaMOPDConfig, ModelConfig))
    args = [
        "--config",
        os.path.join(RECIPES, "toy.yaml"),
        "--model_name_or_path",
        "lab:camopd_student?pretrain_steps=3",
    ]
    args += ["--general_teacher", "lab:camopd_general_teacher?pretrain_steps=3"]
    args += ["--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--max_completion_length", "4"]
    args += ["--per_device_train_batch_size", "2", "--gradient_coherence_every", "0"]
    script_args, config, model_args = parser.parse_args_and_config(args=args)
    example.train(script_args, config, model_args)
    assert os.path.exists(tmp_path / "out" / "model.safetensors")
