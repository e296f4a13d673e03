"""The `trl-distill` dispatcher, `--config` for every command, LoRA students through each training command, and the
bitsandbytes messages on a CPU-only machine."""

import importlib
import json
import os

import pytest
import torch
import yaml

from trl_distill import cli
from trl_distill.scripts.utils import parse_args_with_config


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = {"scas", "dmc", "ogls-sd", "camopd"}


def toy(job: str) -> str:
    return os.path.join(ROOT, "recipes", job.replace("-", "_"), "toy.yaml")


def test_every_command_of_the_issue_dispatches_to_a_main():
    assert {"scas", "dmc", "ogls-sd", "camopd", "evaluate", "build-pool", "lab"} <= set(cli.COMMANDS)
    for name, (module, _) in cli.COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
    assert "dmc-rank" in cli.usage() and "scas-score" in cli.usage()
    assert cli.main(["no-such-command"]) == 2


@pytest.mark.parametrize("job", sorted(TRAINING))
def test_training_commands_show_the_config_fields_in_help(job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([job, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--output_dir" in text and "--use_peft" in text and "--model_name_or_path" in text


def test_argparse_commands_read_config_and_flags_override_it(tmp_path):
    from trl_distill.scripts.evaluate import build_parser

    recipe = tmp_path / "ice.yaml"
    recipe.write_text(yaml.safe_dump({"identity_name": "Qwen", "identity_organisation": "Alibaba", "seed": 3}))
    args = parse_args_with_config(build_parser(), ["ice", "--config", str(recipe), "--seed", "7"])
    # the required options came from the recipe, the flag beat the recipe
    assert (args.command, args.identity_name, args.identity_organisation, args.seed) == ("ice", "Qwen", "Alibaba", 7)

    recipe.write_text(yaml.safe_dump({"identity_nme": "Qwen"}))
    with pytest.raises(SystemExit):
        parse_args_with_config(build_parser(), ["ice", "--config", str(recipe)])


def test_scas_score_reads_a_config(tmp_path, tokenizer_dir):
    """A scoring run configured by YAML only; the command returns its summary and the dispatcher exits 0."""
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.lab.world.tokenizer import build_tokenizer
    from trl_distill.lab.world.toys import toy_pool

    tokenizer = build_tokenizer()
    tiny_model(tokenizer, "xs").save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    toy_pool(4).to_json(tmp_path / "pool.jsonl")
    recipe = tmp_path / "score.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": str(tmp_path / "student"),
                "pool": str(tmp_path / "pool.jsonl"),
                "output_dir": str(tmp_path / "o"),
            }
        )
    )
    assert cli.main(["scas-score", "--config", str(recipe), "--batch_size", "8"]) == 0
    with open(tmp_path / "o" / "summary.json") as f:
        assert json.load(f)["selected"] == 4


# the toy recipe's student and general teacher pre-trained 2 steps (a smaller `lab:` source than the recipe's)
CAMOPD_TWO_STEPS = [
    "--model_name_or_path",
    "lab:camopd_student?pretrain_steps=2",
    "--general_teacher",
    "lab:camopd_general_teacher?pretrain_steps=2",
]


def peft_args(job: str, output_dir: str) -> list[str]:
    args = ["--config", toy(job), "--output_dir", output_dir, "--max_steps", "2", "--save_strategy", "no"]
    args += ["--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "0.05"]
    return (
        args
        + {
            "scas": [
                "--dataset_name",
                "lab:scas_pool?prompts=8",
                "--model_name_or_path",
                "lab:scas_student?size=xs",
                "--per_device_train_batch_size",
                "4",
            ],
            "dmc": [
                "--per_device_train_batch_size",
                "4",
                "--probe_size",
                "8",
                "--dev_size",
                "4",
                "--max_new_tokens",
                "4",
            ],
            "ogls-sd": [
                # a 2-step student has no group with both outcomes: under the v2 default (unprivileged anchor) its
                # target is the student itself and the gradient is zero, so train against the privileged anchor
                "--steering_anchor",
                "privileged",
                "--model_name_or_path",
                "lab:ogls_sd_student?pretrain_steps=2",
                "--per_device_train_batch_size",
                "4",
                "--max_completion_length",
                "4",
            ],
            "camopd": [
                *CAMOPD_TWO_STEPS,
                "--per_device_train_batch_size",
                "2",
                "--max_completion_length",
                "4",
            ]
            + ["--gradient_coherence_every", "0"],
        }[job]
    )


def train_from_cli(job: str, argv: list[str]):
    """Runs a training command the way `trl-distill <job>` does and returns its trainer."""
    module = importlib.import_module(cli.COMMANDS[job][0])
    parser = module.make_parser()
    return module.train(*parser.parse_args_and_config(args=argv))


@pytest.mark.parametrize("job", sorted(TRAINING))
def test_each_training_command_trains_a_lora_student(job, tmp_path, monkeypatch):
    from peft import PeftModel

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    trainer = train_from_cli(job, peft_args(job, str(tmp_path / "out")))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(model, PeftModel) and trainer.state.global_step == 2
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    # lora_B starts at zero: a nonzero one means the adapter was trained
    assert any(p.abs().sum() > 0 for name, p in model.named_parameters() if "lora_B" in name)
    assert os.path.exists(tmp_path / "out" / "adapter_model.safetensors")
    if job == "ogls-sd":  # the `initial` teacher is the adapter-disabled base, no second copy
        assert trainer.args.teacher_model_kind == "initial" and trainer.teacher_model is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_bitsandbytes_on_cpu_fails_early_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    # a 4-bit student: refused before any model or data is loaded
    argv = ["--config", toy("scas"), "--model_name_or_path", "Qwen/Qwen2.5-1.5B-Instruct", "--dataset_name"]
    argv += [str(tmp_path / "pool.jsonl"), "--output_dir", str(tmp_path / "out"), "--load_in_4bit"]
    from trl_distill.scripts.scas import make_parser
    from trl_distill.scripts.utils import quantization_config

    _, _, model_args = make_parser().parse_args_and_config(args=argv)
    with pytest.raises(ValueError, match="--load_in_4bit .*needs a CUDA device"):
        quantization_config(model_args)
    with pytest.raises(ValueError, match="needs a CUDA device"):  # the command itself stops there too
        cli.main(["scas", *argv])
    # 4-bit teachers (CaMOPD): refused while loading the first teacher, before training
    argv = ["--config", toy("camopd"), *CAMOPD_TWO_STEPS, "--output_dir", str(tmp_path / "out")]
    argv += ["--teacher_load_in_4bit", "true"]
    with pytest.raises(ValueError, match="teacher_load_in_4bit=True` needs a CUDA device"):
        train_from_cli("camopd", argv)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit needs a CUDA device")
def test_camopd_trains_with_a_4bit_teacher_on_gpu(tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    argv = ["--config", toy("camopd"), *CAMOPD_TWO_STEPS, "--output_dir", str(tmp_path / "out")]
    argv += [
        "--teacher_load_in_4bit",
        "true",
        "--use_cpu",
        "false",
        "--max_steps",
        "2",
        "--max_completion_length",
        "4",
    ]
    argv += ["--per_device_train_batch_size", "2", "--gradient_coherence_every", "0"]
    trainer = train_from_cli("camopd", argv)
    teacher = trainer.accelerator.unwrap_model(trainer.teachers["general"])
    assert getattr(teacher, "is_loaded_in_4bit", False) and trainer.state.global_step == 2


@pytest.mark.parametrize("job", ["ogls-sd"])  # scas and camopd evaluate their lab data too; dmc its first candidate
def test_lab_runs_evaluate_when_eval_strategy_is_set(job, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path / "cache"))
    argv = [
        *peft_args(job, str(tmp_path / "out")),
        "--max_steps",
        "1",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "1",
    ]
    trainer = train_from_cli(job, [*argv, "--per_device_eval_batch_size", "4"])
    assert any("eval_loss" in record or "eval_runtime" in record for record in trainer.state.log_history)
