"""`trl-distill ogls-sd`: train with OGLSSDTrainer from a recipe (`--config`), on a dataset or on the tiny world.

    trl-distill ogls-sd --config recipes/ogls_sd/toy.yaml --lab

Same arguments as `examples/ogls_sd.py`, which this module also supplies with its script arguments and data loading.
"""

import os
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ..core.verifiers import exact_match_reward, numeric_reward
from .ogls_sd_config import OGLSSDConfig
from .ogls_sd_trainer import OGLSSDTrainer


REWARDS = {"numeric": numeric_reward, "exact_match": exact_match_reward}


@dataclass
class OGLSSDScriptArguments(ScriptArguments):
    r"""
    Script arguments for the OGLS-SD example (beside TRL's `dataset_name`, `dataset_config`, `dataset_train_split`).

    Args:
        privileged_context_column (`str`, *optional*, defaults to `"privileged_context"`):
            Column holding what the teacher sees beyond the prompt (e.g. a reference solution); renamed to
            `privileged_context`.
        reward (`str`, *optional*, defaults to `"numeric"`):
            Verifier: `numeric` (the final `Answer:` line equals the `answer` column as a number) or `exact_match`.
        lab (`bool`, *optional*, defaults to `False`):
            Run on the offline tiny world: an `xs` student pre-trained briefly on arithmetic (cached locally), arithmetic
            prompts with the reference solution as privileged context, and the tiny world's task reward.
        lab_pretrain_steps (`int`, *optional*, defaults to `150`):
            Pre-training steps of the tiny-world student.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Hub id or .jsonl/.json/.parquet/.csv file."})
    privileged_context_column: str = field(
        default="privileged_context", metadata={"help": "Column with the teacher's privileged context."}
    )
    reward: str = field(default="numeric", metadata={"help": "Verifier: numeric or exact_match."})
    lab: bool = field(default=False, metadata={"help": "Run on the offline tiny world."})
    lab_pretrain_steps: int = field(default=150, metadata={"help": "Pre-training steps of the tiny-world student."})


def load_rows(script_args: OGLSSDScriptArguments):
    name = script_args.dataset_name
    extension = os.path.splitext(name)[1].lstrip(".")
    if extension in ("jsonl", "json", "parquet", "csv"):
        data = load_dataset("json" if extension == "jsonl" else extension, data_files=name, split="train")
    else:
        data = load_dataset(name, script_args.dataset_config, split=script_args.dataset_train_split)
    if script_args.privileged_context_column != "privileged_context":
        data = data.rename_column(script_args.privileged_context_column, "privileged_context")
    return data


def lab_world(script_args: OGLSSDScriptArguments):
    """A briefly pre-trained `xs` student and arithmetic rows whose privileged context is the reference solution."""
    from ..lab.models import pretrained_model
    from ..lab.tasks import make_task_splits, task_reward
    from ..lab.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    splits = make_task_splits(("arithmetic",), 512, 32, 32, seed=0)
    path = pretrained_model(tokenizer, "ogls-sd-student", splits["train"], script_args.lab_pretrain_steps)
    data = splits["train"].map(lambda row: {"privileged_context": row["completion"][0]["content"]})
    return tokenizer, path, data, task_reward


def load_model_and_data(script_args: OGLSSDScriptArguments, model_args: ModelConfig):
    """The model path, tokenizer (left padding), training rows and reward function the arguments ask for."""
    if script_args.lab:
        tokenizer, model_path, data, reward = lab_world(script_args)
    else:
        if not (model_args.model_name_or_path and script_args.dataset_name):
            raise ValueError("Give --model_name_or_path and --dataset_name, or use --lab.")
        if script_args.reward not in REWARDS:
            raise ValueError(f"--reward must be one of {sorted(REWARDS)}, got {script_args.reward!r}.")
        model_path = model_args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        data, reward = load_rows(script_args), REWARDS[script_args.reward]
    tokenizer.padding_side = "left"
    return model_path, tokenizer, data, reward


def train(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig) -> OGLSSDTrainer:
    """Builds the trainer, trains and saves the model to `training_args.output_dir`."""
    model_path, tokenizer, data, reward = load_model_and_data(script_args, model_args)
    trainer = OGLSSDTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_path, dtype=model_args.dtype or "auto"),
        reward_funcs=reward,
        args=training_args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer


def make_parser(prog: str | None = "trl-distill ogls-sd") -> TrlParser:
    """The `TrlParser` over ([`OGLSSDScriptArguments`], [`OGLSSDConfig`], [`~trl.ModelConfig`])."""
    return TrlParser((OGLSSDScriptArguments, OGLSSDConfig, ModelConfig), prog=prog)


def main(argv=None) -> int:
    script_args, training_args, model_args = make_parser().parse_args_and_config(args=argv)
    train(script_args, training_args, model_args)
    return 0
