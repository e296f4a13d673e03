"""The `trl-distill dmc-rank` ranking command and the DMC recipes."""

import glob
import json
import os

import pytest
from trl import ModelConfig, SFTConfig, TrlParser

from trl_distill.dmc.dmc_callback import DMCArguments
from trl_distill.scripts.dmc_rank import DMCDataArguments, main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ranking_command_on_files(tmp_path, tiny_student, tokenizer, arithmetic):
    model_dir = str(tmp_path / "student")
    tiny_student.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    good = arithmetic["train"].select(range(8))
    good.to_json(str(tmp_path / "good.jsonl"))
    half = good.add_column("correct", [i % 2 == 0 for i in range(8)])
    half.save_to_disk(str(tmp_path / "half"))
    arithmetic["dev"].to_json(str(tmp_path / "dev.jsonl"))
    out = str(tmp_path / "table.json")
    # fmt: off
    table = main([
        "--model_name_or_path", model_dir, "--datasets", f"good={tmp_path}/good.jsonl", f"half={tmp_path}/half",
        "--dev_dataset", f"{tmp_path}/dev.jsonl", "--verifier", "trl_distill.lab.world.tasks:task_reward",
        "--probe_size", "4", "--dev_size", "2", "--max_new_tokens", "4", "--output_json", out,
    ])
    # fmt: on
    assert {row["dataset"]: row["quality"] for row in table} == {"good": 1.0, "half": 0.5}
    with open(out) as f:
        assert json.load(f) == table


def test_command_needs_its_inputs():
    with pytest.raises(ValueError, match="--datasets"):
        main(["--model_name_or_path", "m", "--dev_dataset", "d.jsonl"])
    with pytest.raises(ValueError, match="not `name=path`"):
        main(["--model_name_or_path", "m", "--datasets", "data.jsonl", "--dev_dataset", "d.jsonl"])
    with pytest.raises(ValueError, match="--model_name_or_path"):
        main(["--datasets", "a=a.jsonl", "--dev_dataset", "d.jsonl"])


@pytest.mark.parametrize("recipe", sorted(glob.glob(os.path.join(ROOT, "recipes", "dmc", "*.yaml"))))
def test_recipes_parse_into_the_config_classes(recipe):
    parser = TrlParser((DMCDataArguments, DMCArguments, SFTConfig, ModelConfig))
    # use_cpu lets the bf16 GPU recipe validate on a CPU-only machine
    argv = ["--config", recipe, "--use_cpu", "true"]
    data_args, dmc_args, training_args, model_args = parser.parse_args_and_config(argv)
    assert dmc_args.strategy in ("top_dataset", "mixture", "top_fraction") and dmc_args.reselect_every >= 1
    assert not training_args.packing
    with open(recipe) as f:
        head = f.readline()
    if recipe.endswith("toy.yaml"):  # the tiny world's sources, resolved when loaded
        assert model_args.model_name_or_path == "lab:dmc_student" and data_args.verifier == "lab:task"
        assert len(data_args.datasets) == 4 and data_args.dev_dataset == "lab:dmc_dev"
    else:
        assert head.startswith("# Expected hardware:")
        assert model_args.model_name_or_path and len(data_args.datasets) >= 2 and data_args.dev_dataset
        assert training_args.bf16 and training_args.learning_rate == 1e-5
