"""Every recipe parses with the command that runs it (`trl-distill <command> --config ...`), every method ships a toy
and a real-scale recipe with its hardware written at the top, and the accelerate configs say what their names say."""

import glob
import importlib
import os

import pytest
import yaml
from trl import TrlParser


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
# recipe folder -> `trl-distill` command that runs its recipes
COMMAND_OF = {"scas": "scas", "dmc": "dmc", "ogls_sd": "ogls-sd", "camopd": "camopd", "build_pool": "build-pool"}


def command_parser(command: str) -> TrlParser:
    from trl_distill.cli import COMMANDS

    return importlib.import_module(COMMANDS[command][0]).make_parser()


def test_every_method_folder_has_a_toy_and_a_real_scale_recipe():
    folders = sorted(d for d in os.listdir(RECIPES) if d != "accelerate")
    assert sorted(COMMAND_OF) == folders
    for folder in folders:
        names = sorted(os.listdir(os.path.join(RECIPES, folder)))
        assert "toy.yaml" in names and len(names) >= 2, folder
        for name in names:
            with open(os.path.join(RECIPES, folder, name)) as f:
                head = f.readline()
            if name != "toy.yaml":  # the real-scale recipes say what they need first
                assert head.startswith("# Expected hardware:"), f"{folder}/{name}"


METHOD_RECIPES = sorted(p for folder in COMMAND_OF for p in glob.glob(os.path.join(RECIPES, folder, "*.yaml")))


@pytest.mark.parametrize("recipe", METHOD_RECIPES, ids=lambda p: os.path.relpath(p, RECIPES))
def test_recipe_parses_with_its_command(recipe, tmp_path):
    command = COMMAND_OF[os.path.basename(os.path.dirname(recipe))]
    argv = ["--config", recipe, "--output_dir", str(tmp_path)]
    if command != "build-pool":  # let the bf16 GPU recipes validate on a CPU-only machine
        argv += ["--use_cpu", "true", "--bf16", "false"]
    parsed = command_parser(command).parse_args_and_config(args=argv)
    # every key the recipe sets reaches a parsed field with the recipe's value (read here with yaml, not TrlParser)
    with open(recipe) as f:
        written = yaml.safe_load(f)
    overridden = {arg[2:] for arg in argv if arg.startswith("--")}
    for key, value in written.items():
        if key in overridden:
            continue
        holders = [p for p in parsed if hasattr(p, key)]
        assert holders, f"{key} is a field of no parsed config"
        got = getattr(holders[0], key)
        got = getattr(got, "value", got)  # enum fields (lr_scheduler_type) hold their string as `.value`
        if key == "report_to" and value == "none":  # transformers reads "none" as no integration
            value = []
        assert got == value or str(got) == str(value), f"{key}: {got!r} != {value!r}"


def test_accelerate_configs_match_their_names():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {
        os.path.basename(p)[:-5]: load_config_from_file(p)
        for p in glob.glob(os.path.join(RECIPES, "accelerate", "*.yaml"))
    }
    assert set(configs) == {"single_device", "multi_gpu", "multi_cpu", "zero2", "zero3", "zero3_cpu", "fsdp2"}
    assert configs["multi_cpu"].distributed_type.value == "MULTI_CPU" and configs["multi_cpu"].use_cpu
    assert configs["single_device"].distributed_type.value == "NO" and configs["single_device"].num_processes == 1
    assert configs["multi_gpu"].distributed_type.value == "MULTI_GPU"
    assert configs["zero2"].deepspeed_config["zero_stage"] == 2
    for name in ("zero3", "zero3_cpu"):
        ds = configs[name].deepspeed_config
        # teachers are sharded at load time, and save_model writes one full checkpoint
        assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] and ds["zero3_save_16bit_model"], name
    assert configs["zero3_cpu"].use_cpu and configs["zero3_cpu"].num_processes == 1
    assert configs["zero3_cpu"].mixed_precision == "no"  # bf16 on CPU DeepSpeed is not the smoke check's point
    assert configs["fsdp2"].distributed_type.value == "FSDP" and configs["fsdp2"].fsdp_config["fsdp_version"] == 2
    # precision is the recipe's `bf16`, never forced by the launcher config
    assert {name: c.mixed_precision for name, c in configs.items()} == dict.fromkeys(configs, "no")


# --- every accelerate config + recipe pair the docs show agrees on precision ----------------------------------------
FOLDER_OF = {command: folder for folder, command in COMMAND_OF.items()}


def documented_pairs() -> list[tuple[str, str]]:
    """(accelerate config, recipe) pairs: each command of docs/distributed.md that names both, each real-scale
    recipe's `Expected hardware` line, and every toy recipe with each config the GPU smoke test launches it under."""
    import re

    with open(os.path.join(ROOT, "docs", "distributed.md")) as f:
        commands = f.read().replace("\\\n", " ").splitlines()
    pairs = set()
    for line in commands:
        config = re.search(r"--config_file (recipes/accelerate/[\w.]+\.yaml)", line)
        recipe = re.search(r"--config (recipes/\w+/[\w.-]+\.yaml)", line)
        if config and recipe:
            pairs.add((os.path.basename(config.group(1)), recipe.group(1)))
    for recipe in METHOD_RECIPES:
        with open(recipe) as f:
            header = re.search(r"recipes/accelerate/([\w.]+\.yaml)", f.readline())
        if header:
            pairs.add((header.group(1), os.path.relpath(recipe, ROOT)))
    for folder in ("scas", "dmc", "ogls_sd", "camopd"):  # tests/test_distributed.py launches each toy recipe so
        for config in ("zero3_cpu.yaml", "zero3.yaml", "zero2.yaml", "multi_gpu.yaml"):
            pairs.add((config, f"recipes/{folder}/toy.yaml"))
    return sorted(pairs)


def launch_environment(config: str) -> dict[str, str]:
    """The ACCELERATE_* variables `accelerate launch --config_file config` gives the training process."""
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
        prepare_deepspeed_cmd_env,
        prepare_simple_launcher_cmd_env,
    )

    args = launch_command_parser().parse_args(["--config_file", config, "script.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config) + ["mixed_precision"] * mixed_precision_from_config
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)  # the same ACCELERATE_* variables as the multi-GPU launcher
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_") and os.environ.get(k) != v}


def test_the_documented_pairs_include_the_ones_that_used_to_clash():
    pairs = documented_pairs()
    assert ("zero3.yaml", "recipes/camopd/qwen2.5-7b-medical.yaml") in pairs
    assert ("zero2.yaml", "recipes/ogls_sd/qwen2.5-1.5b-math.yaml") in pairs
    assert ("zero3.yaml", "recipes/ogls_sd/toy.yaml") in pairs  # bf16: false against a bf16 config, until fixed


@pytest.mark.parametrize("pair", documented_pairs(), ids=lambda p: f"{p[0]}+{os.path.relpath(p[1], 'recipes')}")
def test_accelerate_config_and_recipe_agree_on_precision(pair, monkeypatch, tmp_path):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    config, recipe = pair
    for key, value in launch_environment(os.path.join(RECIPES, "accelerate", config)).items():
        monkeypatch.setenv(key, value)
    command = COMMAND_OF[recipe.split("/")[1]]
    argv = ["--config", os.path.join(ROOT, recipe), "--output_dir", str(tmp_path), "--use_cpu", "true"]
    try:
        parsed = command_parser(command).parse_args_and_config(args=argv)
        (args,) = [p for p in parsed if isinstance(p, TrainingArguments)]
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
        assert args.mixed_precision == precision, "the accelerate config overrides the recipe's precision"
        if args.deepspeed_plugin is not None:
            # what Trainer checks when it starts: the DeepSpeed config built from the accelerate config vs the recipe
            ds_config = HfTrainerDeepSpeedConfig(args.deepspeed_plugin.deepspeed_config)
            ds_config.trainer_config_process(args)
            assert ds_config.mismatches == [], ds_config.mismatches
            assert ds_config.config["bf16"]["enabled"] == args.bf16
    finally:
        unset_hf_deepspeed_config()
