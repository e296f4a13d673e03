"""`trl-distill ogls-sd`: train with [`OGLSSDTrainer`] from a recipe (`--config`), on a dataset or on the tiny world.

```bash
trl-distill ogls-sd --config recipes/ogls_sd/toy.yaml --lab
accelerate launch --config_file recipes/accelerate/zero2.yaml -m trl_distill.cli ogls-sd \
    --config recipes/ogls_sd/qwen2.5-1.5b-math.yaml --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name math.jsonl --reward numeric
```

Rows need `prompt`, the `privileged_context` the self-teacher sees beyond it (e.g. a reference solution) and the
columns the verifier reads (e.g. `answer`). `examples/ogls_sd.py` runs this job as a standalone script.
"""

from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from ..core.data import check_local_path
from ..ogls_sd.ogls_sd_config import OGLSSDConfig
from ..ogls_sd.ogls_sd_trainer import OGLSSDTrainer
from .utils import (
    DistillScriptArguments,
    check_quantization,
    finish,
    lab_tokenizer,
    load_train_eval,
    run_training_command,
    student_init_kwargs,
    student_quantization_config,
    training_parser,
    verifier,
)


LAB_EVAL_PROMPTS = 16


@dataclass
class OGLSSDScriptArguments(DistillScriptArguments):
    r"""
    Script arguments of `trl-distill ogls-sd` (beside [`OGLSSDConfig`] and [`~trl.ModelConfig`]): TRL's script
    arguments plus:

    Args:
        privileged_context_column (`str`, *optional*, defaults to `"privileged_context"`):
            Column holding what the teacher sees beyond the prompt (e.g. a reference solution); renamed to
            `privileged_context`.
        reward (`str`, *optional*, defaults to `"numeric"`):
            The verifier, by registry name (`numeric`, `exact_match`, `math_verify`, `lab_task`) or `module:function`.
        lab_pretrain_steps (`int`, *optional*, defaults to `150`):
            Pre-training steps of the tiny-world student (with `lab`: an `xs` student pre-trained briefly on
            arithmetic, cached locally; arithmetic prompts with the reference solution as privileged context; the tiny
            world's task reward).
    """

    privileged_context_column: str = field(
        default="privileged_context", metadata={"help": "Column with the teacher's privileged context."}
    )
    reward: str = field(
        default="numeric",
        metadata={"help": "Verifier: numeric, exact_match, math_verify, lab_task or module:function."},
    )
    lab_pretrain_steps: int = field(default=150, metadata={"help": "Pre-training steps of the tiny-world student."})


def load_model_and_data(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig):
    """The student path (loaded by the trainer with `training_args.model_init_kwargs`, so ZeRO-3 shards it at load
    time), its tokenizer (left padding), the train and eval rows and the reward
    function the arguments ask for."""
    if script_args.lab:
        from ..lab.world.toys import ogls_sd_world

        tokenizer = lab_tokenizer()
        model_path, train = ogls_sd_world(tokenizer, script_args.lab_pretrain_steps)
        reward = verifier("lab_task")
        # the tiny world has one split: with eval_strategy set it is evaluated on its training prompts
        # the tiny world evaluates on a slice of its prompts: a whole pass of rollouts over all of them takes minutes
        evaluating = str(training_args.eval_strategy) not in ("no", "IntervalStrategy.NO")
        evaluation = train.select(range(min(LAB_EVAL_PROMPTS, len(train)))) if evaluating else None
    else:
        if not (model_args.model_name_or_path and script_args.dataset_name):
            raise ValueError("Give --model_name_or_path and --dataset_name, or use --lab.")
        model_path = model_args.model_name_or_path
        check_local_path(model_path, "student (--model_name_or_path)")
        reward = verifier(script_args.reward)
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
        train, evaluation = load_train_eval(script_args, training_args)
        column = script_args.privileged_context_column
        if column != "privileged_context":
            train = train.rename_column(column, "privileged_context")
            evaluation = evaluation.rename_column(column, "privileged_context") if evaluation else None
    init_kwargs = student_init_kwargs(model_args, training_args)
    quantization = student_quantization_config(script_args, model_args)
    if quantization is not None:
        init_kwargs["quantization_config"] = quantization
    training_args.model_init_kwargs = init_kwargs
    tokenizer.padding_side = "left"
    return model_path, tokenizer, train, evaluation, reward


def train(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig) -> OGLSSDTrainer:
    """Builds the [`OGLSSDTrainer`], trains (resuming from `training_args.resume_from_checkpoint`) and saves."""
    check_quantization(model_args)  # before anything is loaded
    model_path, tokenizer, train_rows, eval_rows, reward = load_model_and_data(script_args, training_args, model_args)
    trainer = OGLSSDTrainer(
        model=model_path,
        reward_funcs=reward,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finish(trainer, training_args, script_args.dataset_name)
    return trainer


def make_parser(prog: str | None = "trl-distill ogls-sd") -> TrlParser:
    """The `TrlParser` over ([`OGLSSDScriptArguments`], [`OGLSSDConfig`], [`~trl.ModelConfig`])."""
    types = (OGLSSDScriptArguments, OGLSSDConfig, ModelConfig)
    return training_parser(types, prog)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (`--config recipe.yaml` and flags that override it), trains, saves; returns the exit status."""
    return run_training_command("ogls-sd", make_parser, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
