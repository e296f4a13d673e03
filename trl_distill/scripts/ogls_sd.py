"""`trl-distill ogls-sd`: train with [`OGLSSDTrainer`] from a recipe (`--config`), on a dataset.

```bash
trl-distill ogls-sd --config ogls_sd/toy     # the packaged toy recipe: offline, CPU, a few minutes
accelerate launch --config_file recipes/accelerate/zero2.yaml -m trl_distill.cli ogls-sd \
    --config recipes/ogls_sd/qwen2.5-1.5b-math.yaml --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name math.jsonl --reward numeric
```

Rows need `prompt`, the `privileged_context` the self-teacher sees beyond it (e.g. a reference solution) and the
columns the verifier reads (e.g. `answer`). `examples/ogls_sd.py` runs this job as a standalone script.
"""

from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, ScriptArguments

from ..core.verifiers import resolve_verifier
from ..ogls_sd.ogls_sd_config import OGLSSDConfig
from ..ogls_sd.ogls_sd_trainer import OGLSSDTrainer
from .utils import (
    build_trainer,
    check_quantization,
    load_student,
    load_train_eval,
    student_quantization_config,
    train_and_finish,
    training_command,
)


@dataclass
class OGLSSDScriptArguments(ScriptArguments):
    r"""
    Script arguments of `trl-distill ogls-sd` (beside [`OGLSSDConfig`] and [`~trl.ModelConfig`]): TRL's script
    arguments plus:

    Args:
        privileged_context_column (`str`, *optional*, defaults to `"privileged_context"`):
            Column holding what the teacher sees beyond the prompt (e.g. a reference solution); renamed to
            `privileged_context`.
        reward (`str`, *optional*, defaults to `"numeric"`):
            The verifier: a registry name (`numeric`, `exact_match`, `math_verify`), a source (`scheme:name`) or
            `module:function`.
    """

    privileged_context_column: str = field(
        default="privileged_context", metadata={"help": "Column with the teacher's privileged context."}
    )
    reward: str = field(
        default="numeric",
        metadata={"help": "Verifier: numeric, exact_match, math_verify, a source (scheme:name) or module:function."},
    )


def load_model_and_data(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig):
    """The student path (loaded by the trainer with `training_args.model_init_kwargs`, so ZeRO-3 shards it at load
    time), its tokenizer (left padding), the train and eval rows and the reward
    function the arguments ask for."""
    if not script_args.dataset_name:
        raise ValueError("Give the prompts with --dataset_name (a file, a directory, a Hub id or a source).")
    model_path, tokenizer = load_student(model_args, training_args)
    reward = resolve_verifier(script_args.reward)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    train, evaluation = load_train_eval(script_args, training_args)
    column = script_args.privileged_context_column
    if column != "privileged_context":
        train = train.rename_column(column, "privileged_context")
        evaluation = evaluation.rename_column(column, "privileged_context") if evaluation else None
    quantization = student_quantization_config(model_args)
    if quantization is not None:
        training_args.model_init_kwargs["quantization_config"] = quantization
    tokenizer.padding_side = "left"
    return model_path, tokenizer, train, evaluation, reward


def train(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig) -> OGLSSDTrainer:
    """Builds the [`OGLSSDTrainer`], trains (resuming from `training_args.resume_from_checkpoint`) and saves."""
    check_quantization(model_args)  # before anything is loaded
    model_path, tokenizer, train_rows, eval_rows, reward = load_model_and_data(script_args, training_args, model_args)
    trainer = build_trainer(
        OGLSSDTrainer,
        training_args,
        model_args,
        model=model_path,
        reward_funcs=reward,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
    )
    return train_and_finish(trainer, training_args, script_args.dataset_name)


make_parser, main = training_command("ogls-sd", (OGLSSDScriptArguments, OGLSSDConfig, ModelConfig), train)


if __name__ == "__main__":
    raise SystemExit(main())
