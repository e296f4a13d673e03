"""`trl-distill scas`: train with [`SCASTrainer`] from a recipe (`--config`), on a candidate pool.

```bash
trl-distill scas --config scas/toy     # the packaged toy recipe: offline, CPU, about a minute
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli scas \
    --config recipes/scas/qwen2.5-1.5b.yaml --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name pool.jsonl
```

`examples/scas.py` runs this job as a standalone script. Scoring without training is `trl-distill scas-score`.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trl import ModelConfig, ScriptArguments

from ..scas.scas_config import SCASConfig
from .utils import (
    build_trainer,
    check_quantization,
    load_student,
    load_train_eval,
    student_quantization_config,
    train_and_finish,
    training_command,
)


if TYPE_CHECKING:
    from ..scas.scas_trainer import SCASTrainer


@dataclass
class SCASScriptArguments(ScriptArguments):
    r"""
    Script arguments of `trl-distill scas` (beside [`SCASConfig`] and [`~trl.ModelConfig`]): TRL's script arguments,
    where `dataset_name` is the candidate pool (a `.jsonl`/`.json`/`.parquet`/`.csv` file, a directory, a Hub
    dataset id or a source (`scheme:name`, [`~trl_distill.core.sources`]), in the long form (`prompt_id`, `prompt`, `completion`, `teacher`,
    `correct`) or the grouped form (`prompt`, `candidates`); a single file has only the `train` split, so evaluation
    (`--eval_strategy`) needs a directory with `train`/`test` files or slices such as
    `--dataset_test_split 'train[90%:]'`; the eval pool is evaluated on its verified answers, as the pool is trained.
    """


def load_model_and_pool(script_args: SCASScriptArguments, training_args: SCASConfig, model_args: ModelConfig):
    """The student (a model, or a path [`SCASTrainer`] loads with `training_args.model_init_kwargs`), its tokenizer
    (`None`: loaded by the trainer), the candidate pool and the eval split (or `None`) the arguments ask for."""
    if script_args.dataset_name is None:
        raise ValueError("Give the candidate pool with --dataset_name (a file, a directory, a Hub id or a source).")
    model, tokenizer = load_student(model_args, training_args, seed=training_args.seed)
    pool, eval_pool = load_train_eval(script_args, training_args)
    return model, tokenizer, pool, eval_pool


def train(script_args: SCASScriptArguments, training_args: SCASConfig, model_args: ModelConfig) -> "SCASTrainer":
    """Builds the [`SCASTrainer`], trains, prints each selection round (`finish`) and saves to `training_args.output_dir`."""
    from ..scas.scas_trainer import SCASTrainer  # imported here, so that `--help` does not import the Trainer

    check_quantization(model_args)  # before anything is loaded
    model, tokenizer, pool, eval_pool = load_model_and_pool(script_args, training_args, model_args)
    # an eval pool is evaluated on its (verified-correct) answers as SFT rows: SCASTrainer converts it
    trainer = build_trainer(
        SCASTrainer,
        training_args,
        model_args,
        model=model,
        train_dataset=pool,
        eval_dataset=eval_pool,
        processing_class=tokenizer,
        quantization_config=student_quantization_config(model_args),
    )
    return train_and_finish(trainer, training_args, script_args.dataset_name)


make_parser, main = training_command("scas", (SCASScriptArguments, SCASConfig, ModelConfig), train)


if __name__ == "__main__":
    raise SystemExit(main())
