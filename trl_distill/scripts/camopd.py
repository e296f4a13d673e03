"""`trl-distill camopd`: train with [`CaMOPDTrainer`] from a recipe (`--config`), on prompt datasets.

```bash
trl-distill camopd --config camopd/toy     # the packaged toy recipe: offline, CPU, a few minutes
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli camopd \
    --config recipes/camopd/qwen2.5-7b-medical.yaml --model_name_or_path <specialised model> \
    --general_teacher Qwen/Qwen2.5-7B-Instruct --general_prompts general.jsonl --domain_prompts domain.jsonl
```

`examples/camopd.py` runs this job as a standalone script.
"""

import os
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig

from ..camopd.camopd_config import CaMOPDConfig
from ..camopd.camopd_trainer import CaMOPDTrainer
from ..core.data import load_data
from ..core.served_teacher import is_served_teacher
from ..core.sources import resolve_model, resolve_model_path
from .utils import (
    build_trainer,
    cast_to_dtype,
    check_quantization,
    student_init_kwargs,
    student_quantization_config,
    train_and_finish,
    training_command,
)


@dataclass
class CaMOPDScriptArguments:
    r"""
    Script arguments of `trl-distill camopd` and `examples/camopd.py` (beside [`CaMOPDConfig`] and
    [`~trl.ModelConfig`]).

    Args:
        general_teacher (`str`, *optional*):
            General teacher (e.g. the original general model the student was specialised from): a model id, a path,
            or the URL of a served teacher (`http://host:8000/v1`, vLLM or `trl-distill serve-teacher`).
        domain_teacher (`str`, *optional*):
            Domain teacher; defaults to a frozen copy of the student (`model_name_or_path`).
        general_prompts (`str`, *optional*):
            Proxy general prompts: a `.jsonl`/`.json`/`.parquet`/`.csv` file, a directory or a Hub dataset id.
        domain_prompts (`str`, *optional*):
            Domain prompts, in the same formats.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to read from hub datasets.
        general_eval_prompts (`str`, *optional*):
            Eval prompts of the general source, loaded when `eval_strategy` is not `"no"` (as TRL's scripts load
            `dataset_test_split`); defaults to `general_prompts` at `eval_split`.
        domain_eval_prompts (`str`, *optional*):
            Eval prompts of the domain source; defaults to `domain_prompts` at `eval_split`.
        eval_split (`str`, *optional*, defaults to `"test"`):
            Split of the eval prompts. A `--*_eval_prompts` file of its own is the eval split whole; a single
            `--*_prompts` file has no other split than `train` and is refused here (it would evaluate on the training
            prompts): give eval prompts, a directory with `train`/`test` files, or a slice such as `train[90%:]`.
    """

    general_teacher: str | None = field(default=None, metadata={"help": "General teacher model id or path."})
    domain_teacher: str | None = field(default=None, metadata={"help": "Domain teacher; default: copy of student."})
    general_prompts: str | None = field(default=None, metadata={"help": "Proxy general prompts (hub id or file)."})
    domain_prompts: str | None = field(default=None, metadata={"help": "Domain prompts (hub id or file)."})
    dataset_split: str = field(default="train", metadata={"help": "Split of hub datasets."})
    general_eval_prompts: str | None = field(
        default=None, metadata={"help": "Eval prompts of the general source (default: general_prompts' eval_split)."}
    )
    domain_eval_prompts: str | None = field(
        default=None, metadata={"help": "Eval prompts of the domain source (default: domain_prompts' eval_split)."}
    )
    eval_split: str = field(
        default="test", metadata={"help": "Split of the eval prompts, read when eval_strategy is set."}
    )


def load_models_and_prompts(script_args: CaMOPDScriptArguments, model_args: ModelConfig):
    """The student, tokenizer (left padding), teachers by name and prompt sources by name the arguments ask for.

    Returns:
        `tuple`: `(student, tokenizer, teachers, sources)`: teachers `{"general": ..., "domain": ...}` (paths or
        served-teacher URLs) and sources `{"general": Dataset, "domain": Dataset}`.
    """
    if not (script_args.general_teacher and script_args.general_prompts and script_args.domain_prompts):
        raise ValueError("Give --model_name_or_path, --general_teacher, --general_prompts and --domain_prompts.")
    student, tokenizer = resolve_model(model_args.model_name_or_path, "student (--model_name_or_path)")
    if not isinstance(student, str):
        student = cast_to_dtype(student, model_args)
    general_teacher = script_args.general_teacher
    domain_teacher = script_args.domain_teacher or model_args.model_name_or_path  # default: a copy of the student
    teachers = {}
    for teacher, flag in ((general_teacher, "general"), (domain_teacher, "domain")):
        # a URL is a served teacher, checked when the trainer is built
        what = f"{flag} teacher (--{flag}_teacher)"
        teachers[flag] = teacher if is_served_teacher(teacher) else resolve_model_path(teacher, what)
    if os.path.normpath(script_args.general_prompts) == os.path.normpath(script_args.domain_prompts):
        raise ValueError(
            f"--general_prompts and --domain_prompts are both {script_args.general_prompts!r}: CaMOPD recovers "
            "general ability on general prompts while reviewing the domain on domain prompts, so the two must "
            "differ. Give proxy general prompts to --general_prompts."
        )
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(student, revision=model_args.model_revision)
    general = load_data(script_args.general_prompts, split=script_args.dataset_split)
    domain = load_data(script_args.domain_prompts, split=script_args.dataset_split)
    tokenizer.padding_side = "left"
    return student, tokenizer, teachers, {"general": general, "domain": domain}


def load_eval_prompts(script_args: CaMOPDScriptArguments, training_args: CaMOPDConfig) -> dict | None:
    """The eval prompts by CaMOPD source name when `training_args.eval_strategy` is not `"no"`, else `None`."""
    if str(training_args.eval_strategy) in ("no", "IntervalStrategy.NO"):
        return None
    # an eval file of its own is the eval split; the training file must have one (else it is the training rows)
    general, domain = (
        load_data(own, split=script_args.eval_split, whole_file=True)
        if own
        else load_data(train, split=script_args.eval_split)
        for own, train in (
            (script_args.general_eval_prompts, script_args.general_prompts),
            (script_args.domain_eval_prompts, script_args.domain_prompts),
        )
    )
    return {training_args.recovery_source: general, training_args.review_source: domain}


def train(script_args: CaMOPDScriptArguments, training_args: CaMOPDConfig, model_args: ModelConfig) -> CaMOPDTrainer:
    """Builds the [`CaMOPDTrainer`], trains and saves the model to `training_args.output_dir`."""
    check_quantization(model_args)  # before anything is loaded
    student, tokenizer, teachers, sources = load_models_and_prompts(script_args, model_args)
    training_args.model_init_kwargs = student_init_kwargs(model_args, training_args)
    trainer = build_trainer(
        CaMOPDTrainer,
        training_args,
        model_args,
        model=student,
        teacher_model=teachers,
        train_dataset={
            training_args.recovery_source: sources["general"],
            training_args.review_source: sources["domain"],
        },
        eval_dataset=load_eval_prompts(script_args, training_args),
        processing_class=tokenizer,
        quantization_config=student_quantization_config(model_args),
    )
    return train_and_finish(trainer, training_args)


make_parser, main = training_command("camopd", (CaMOPDScriptArguments, CaMOPDConfig, ModelConfig), train)


if __name__ == "__main__":
    raise SystemExit(main())
