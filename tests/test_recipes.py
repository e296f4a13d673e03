"""Every recipe parses with the command that runs it (`trl-distill <command> --config ...`), every method ships a toy
and a real-scale recipe with its hardware written at the top, and the accelerate configs say what their names say."""

import glob
import importlib
import os

import pytest
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
    if command == "dmc" and recipe.endswith("toy.yaml"):
        argv += ["--lab"]  # DMC's data arguments check their datasets at parse time
    parsed = command_parser(command).parse_args_and_config(args=argv)
    assert len(parsed) >= 1 and all(p is not None for p in parsed)


def test_accelerate_configs_match_their_names():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {
        os.path.basename(p)[:-5]: load_config_from_file(p)
        for p in glob.glob(os.path.join(RECIPES, "accelerate", "*.yaml"))
    }
    assert set(configs) == {"single_device", "multi_gpu", "zero2", "zero3", "zero3_cpu", "fsdp2"}
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
