"""OGLS-SD recipes parse into the config, and the example script runs on the tiny world."""

import os

import pytest
import torch
from recipe_helpers import parse_recipe, recipes_dir, train_example_on_toy
from safetensors.torch import load_file

from trl_distill.core.verifiers import VERIFIERS, resolve_verifier
from trl_distill.ogls_sd.ogls_sd_config import OPSD_GUARD_TEACHER_PROMPT_TEMPLATE, OPSD_SETTINGS, OGLSSDConfig


RECIPES = recipes_dir("ogls_sd")


@pytest.mark.parametrize("recipe", sorted(os.listdir(RECIPES)))
def test_recipe_parses_into_config(recipe, tmp_path):
    script_args, config, model_args = parse_recipe("ogls_sd", OGLSSDConfig, recipe, tmp_path)
    assert isinstance(config, OGLSSDConfig)
    assert config.teacher_model_kind == "initial" and config.num_generations >= 2
    assert "{privileged_context}" in config.teacher_prompt_template
    assert script_args.reward in VERIFIERS or script_args.reward == "lab:task"  # the toy recipe's source
    assert callable(resolve_verifier(script_args.reward))
    if "opsd" in recipe:  # the OPSD baseline: the named configuration with the released clip and guard
        released = {**OPSD_SETTINGS, "jsd_token_clip": 0.05}
        assert {key: getattr(config, key) for key in OPSD_SETTINGS} == released
        assert config.jsd_clip_scope == "vocabulary"
        assert config.teacher_prompt_template == OPSD_GUARD_TEACHER_PROMPT_TEMPLATE
    else:  # OGLS-SD: the v2 defaults, written out
        defaults = OGLSSDConfig(output_dir=str(tmp_path), use_cpu=True)
        for key in ("steering_anchor", "steering", "steer_rollouts", "beta", "jsd_token_clip", "max_distill_tokens"):
            assert getattr(config, key) == getattr(defaults, key), key
        assert config.positive_tail_tokens == 128 and config.normalize_direction
    if recipe.startswith("qwen"):  # OPSD's released sampling and LoRA settings
        assert (config.temperature, config.top_p, config.top_k, config.learning_rate) == (1.2, 0.95, 20, 2e-5)
        assert model_args.use_peft and (model_args.lora_r, model_args.lora_alpha) == (64, 128)


def test_example_runs_on_the_tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    flags = ["--model_name_or_path", "lab:ogls_sd_student?pretrain_steps=3"]
    flags += ["--max_steps", "1", "--max_completion_length", "4", "--per_device_train_batch_size", "4"]
    trainer = train_example_on_toy("ogls_sd", OGLSSDConfig, tmp_path / "out", *flags)
    assert trainer.state.global_step == 1 and trainer.reward_func_names == ["task_reward"]  # the tiny world's verifier
    # the saved weights are the trained ones
    saved = load_file(tmp_path / "out" / "model.safetensors")
    trained = trainer.model.state_dict()
    assert saved and all(torch.equal(value, trained[name].cpu()) for name, value in saved.items())


def test_cli_entry_point_trains_on_the_tiny_world(tmp_path, monkeypatch):
    from trl_distill.cli import main

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    args = ["ogls-sd", "--config", os.path.join(RECIPES, "toy.yaml")]
    args += ["--model_name_or_path", "lab:ogls_sd_student?pretrain_steps=2"]
    args += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--max_completion_length", "4"]
    args += ["--per_device_train_batch_size", "4", "--steering", "contextual"]
    assert main(args) == 0
    assert os.path.exists(tmp_path / "out" / "model.safetensors")
