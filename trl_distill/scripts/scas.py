"""`trl-distill scas`: train with [`SCASTrainer`] from a recipe (`--config`), on a candidate pool or the tiny world.

```bash
trl-distill scas --config recipes/scas/toy.yaml --lab
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli scas \
    --config recipes/scas/qwen2.5-1.5b.yaml --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name pool.jsonl
```

`examples/scas.py` runs this job as a standalone script. Scoring without training is `trl-distill scas-score`.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trl import ModelConfig, TrlParser, get_peft_config

from ..core.data import check_local_path
from ..scas.scas_config import SCASConfig
from .utils import (
    DistillScriptArguments,
    check_quantization,
    finish,
    lab_dtype,
    lab_tokenizer,
    load_train_eval,
    run_training_command,
    student_init_kwargs,
    student_quantization_config,
    training_parser,
)


if TYPE_CHECKING:
    from ..scas.scas_trainer import SCASTrainer


@dataclass
class SCASScriptArguments(DistillScriptArguments):
    r"""
    Script arguments of `trl-distill scas` (beside [`SCASConfig`] and [`~trl.ModelConfig`]): TRL's script arguments,
    where `dataset_name` is the candidate pool (a `.jsonl`/`.json`/`.parquet`/`.csv` file, a directory, or a Hub
    dataset id, in the long form (`prompt_id`, `prompt`, `completion`, `teacher`, `correct`) or the grouped form
    (`prompt`, `candidates`); a single file has only the `train` split, so evaluation (`--eval_strategy`) needs a
    directory with `train`/`test` files or slices such as `--dataset_test_split 'train[90%:]'`; the eval pool is
    evaluated on its verified answers, as the pool is trained; not needed with `lab`, which trains a random-init tiny Qwen2 student on the tiny world's
    arithmetic pool (5 teachers, one of them half wrong), offline), plus:

    Args:
        lab_prompts (`int`, *optional*, defaults to `64`):
            Prompts in the tiny-world pool.
        lab_model_size (`str`, *optional*, defaults to `"s"`):
            Size of the tiny-world student: `xs`, `s`, `m` or `l`.
    """

    lab_prompts: int = field(default=64, metadata={"help": "Prompts in the tiny-world pool."})
    lab_model_size: str = field(default="s", metadata={"help": "Tiny-world student size: xs, s, m or l."})

    def __post_init__(self):
        if self.lab_prompts < 1:
            raise ValueError(f"lab_prompts must be >= 1, got {self.lab_prompts}.")


def load_model_and_pool(script_args: SCASScriptArguments, training_args: SCASConfig, model_args: ModelConfig):
    """The student (a model, or a path [`SCASTrainer`] loads with `training_args.model_init_kwargs`), its tokenizer
    (`None`: loaded by the trainer), the candidate pool and the eval split (or `None`) the arguments ask for."""
    if script_args.lab:
        from ..lab.world.models import tiny_model
        from ..lab.world.toys import toy_pool

        tokenizer = lab_tokenizer()
        model = tiny_model(tokenizer, script_args.lab_model_size, "qwen2", seed=training_args.seed)
        model = lab_dtype(model, model_args)
        pool = toy_pool(script_args.lab_prompts)
        return model, tokenizer, pool, pool if training_args.eval_strategy != "no" else None
    if model_args.model_name_or_path is None or script_args.dataset_name is None:
        raise ValueError("Give --model_name_or_path and --dataset_name (a candidate pool), or use --lab.")
    check_local_path(model_args.model_name_or_path, "student (--model_name_or_path)")
    # As TRL's `trl sft`: the trainer loads the path, so DeepSpeed ZeRO-3 (`zero3_init_flag`) shards it at load time.
    training_args.model_init_kwargs = student_init_kwargs(model_args, training_args)
    pool, eval_pool = load_train_eval(script_args, training_args)
    return model_args.model_name_or_path, None, pool, eval_pool


def train(script_args: SCASScriptArguments, training_args: SCASConfig, model_args: ModelConfig) -> "SCASTrainer":
    """Builds the [`SCASTrainer`], trains, prints each selection round (`finish`) and saves to `training_args.output_dir`."""
    from ..scas.scas_trainer import SCASTrainer  # imported here, so that `--help` does not import the Trainer

    check_quantization(model_args)  # before anything is loaded
    model, tokenizer, pool, eval_pool = load_model_and_pool(script_args, training_args, model_args)
    # an eval pool is evaluated on its (verified-correct) answers as SFT rows: SCASTrainer converts it
    trainer = SCASTrainer(
        model=model,
        args=training_args,
        train_dataset=pool,
        eval_dataset=eval_pool,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=student_quantization_config(script_args, model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finish(trainer, training_args, script_args.dataset_name)
    return trainer


def make_parser(prog: str | None = "trl-distill scas") -> TrlParser:
    """The `TrlParser` over ([`SCASScriptArguments`], [`SCASConfig`], [`~trl.ModelConfig`]), as TRL's scripts."""
    types = (SCASScriptArguments, SCASConfig, ModelConfig)
    return training_parser(types, prog)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (`--config recipe.yaml` and flags that override it), trains, saves; returns the exit status."""
    return run_training_command("scas", make_parser, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
