"""`trl-distill camopd`: train with [`CaMOPDTrainer`] from a recipe (`--config`), on prompt datasets or the tiny world.

```bash
trl-distill camopd --config recipes/camopd/toy.yaml --lab
accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_distill.cli camopd \
    --config recipes/camopd/qwen2.5-7b-medical.yaml --model_name_or_path <specialised model> \
    --general_teacher Qwen/Qwen2.5-7B-Instruct --general_prompts general.jsonl --domain_prompts domain.jsonl
```

`examples/camopd.py` is the same job as a standalone script; it reuses [`CaMOPDScriptArguments`] and
[`load_models_and_prompts`] from here.
"""

import os
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from ..script_utils import check_quantization, quantization_config, student_init_kwargs
from .camopd_config import CaMOPDConfig
from .camopd_trainer import CaMOPDTrainer


@dataclass
class CaMOPDScriptArguments:
    r"""
    Script arguments of `trl-distill camopd` and `examples/camopd.py` (beside [`CaMOPDConfig`] and
    [`~trl.ModelConfig`]).

    Args:
        general_teacher (`str`, *optional*):
            General teacher (e.g. the original general model the student was specialised from).
        domain_teacher (`str`, *optional*):
            Domain teacher; defaults to a frozen copy of the student (`model_name_or_path`).
        general_prompts (`str`, *optional*):
            Proxy general prompts: a hub id, or a `.jsonl`/`.json`/`.parquet`/`.csv` file.
        domain_prompts (`str`, *optional*):
            Domain prompts, in the same formats.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to read from hub datasets.
        lab (`bool`, *optional*, defaults to `False`):
            Run on the offline tiny world: an arithmetic-specialised tiny student, a general teacher pre-trained on
            the string tasks, lab prompts for both sources (all built and cached locally).
        lab_pretrain_steps (`int`, *optional*, defaults to `150`):
            Pre-training steps of the tiny-world student and general teacher.
    """

    general_teacher: str | None = field(default=None, metadata={"help": "General teacher model id or path."})
    domain_teacher: str | None = field(default=None, metadata={"help": "Domain teacher; default: copy of student."})
    general_prompts: str | None = field(default=None, metadata={"help": "Proxy general prompts (hub id or file)."})
    domain_prompts: str | None = field(default=None, metadata={"help": "Domain prompts (hub id or file)."})
    dataset_split: str = field(default="train", metadata={"help": "Split of hub datasets."})
    lab: bool = field(default=False, metadata={"help": "Run on the offline tiny world."})
    lab_pretrain_steps: int = field(default=150, metadata={"help": "Pre-training steps of the tiny-world models."})


def load_prompts(name_or_path: str, split: str):
    """A prompt dataset from a `.jsonl`/`.json`/`.parquet`/`.csv` file or a Hub dataset id."""
    extension = os.path.splitext(name_or_path)[1].lstrip(".")
    if extension in ("jsonl", "json", "parquet", "csv"):
        return load_dataset("json" if extension == "jsonl" else extension, data_files=name_or_path, split="train")
    return load_dataset(name_or_path, split=split)


def lab_world(script_args: CaMOPDScriptArguments):
    """Student specialised on arithmetic, general teacher trained on string tasks, and both prompt sources."""
    from ..lab.models import pretrained_model
    from ..lab.tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits
    from ..lab.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    general = make_task_splits(GENERAL_TASKS, 512, 32, 32, seed=0)
    domain = make_task_splits(DOMAIN_TASKS, 512, 32, 32, seed=0)
    steps = script_args.lab_pretrain_steps
    student_path = pretrained_model(tokenizer, "camopd-student", domain["train"], steps, seed=0)
    teacher_path = pretrained_model(tokenizer, "camopd-general", general["train"], steps, seed=1)
    return tokenizer, student_path, teacher_path, student_path, general["train"], domain["train"]


def load_models_and_prompts(script_args: CaMOPDScriptArguments, model_args: ModelConfig):
    """The student path, tokenizer (left padding), teachers by name and prompt sources by name the arguments ask for.

    Returns:
        `tuple`: `(student, tokenizer, teachers, sources)`: teachers `{"general": ..., "domain": ...}` (paths) and
        sources `{"general": Dataset, "domain": Dataset}`.
    """
    if script_args.lab:
        tokenizer, student, general_teacher, domain_teacher, general, domain = lab_world(script_args)
    else:
        if not (
            model_args.model_name_or_path
            and script_args.general_teacher
            and script_args.general_prompts
            and script_args.domain_prompts
        ):
            raise ValueError(
                "Give --model_name_or_path, --general_teacher, --general_prompts and --domain_prompts, or use --lab."
            )
        student = model_args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(student, revision=model_args.model_revision)
        general_teacher = script_args.general_teacher
        domain_teacher = script_args.domain_teacher or student
        general = load_prompts(script_args.general_prompts, script_args.dataset_split)
        domain = load_prompts(script_args.domain_prompts, script_args.dataset_split)
    tokenizer.padding_side = "left"
    return (
        student,
        tokenizer,
        {"general": general_teacher, "domain": domain_teacher},
        {"general": general, "domain": domain},
    )


def train(script_args: CaMOPDScriptArguments, training_args: CaMOPDConfig, model_args: ModelConfig) -> CaMOPDTrainer:
    """Builds the [`CaMOPDTrainer`], trains and saves the model to `training_args.output_dir`."""
    check_quantization(model_args)  # before anything is loaded
    student, tokenizer, teachers, sources = load_models_and_prompts(script_args, model_args)
    training_args.model_init_kwargs = student_init_kwargs(model_args, training_args)
    trainer = CaMOPDTrainer(
        model=student,
        teacher_model=teachers,
        args=training_args,
        train_dataset={
            training_args.recovery_source: sources["general"],
            training_args.review_source: sources["domain"],
        },
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=None if script_args.lab else quantization_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return trainer


def make_parser(prog: str | None = "trl-distill camopd") -> TrlParser:
    """The `TrlParser` over ([`CaMOPDScriptArguments`], [`CaMOPDConfig`], [`~trl.ModelConfig`])."""
    return TrlParser((CaMOPDScriptArguments, CaMOPDConfig, ModelConfig), prog=prog)


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (`--config recipe.yaml` and flags that override it), trains, saves; returns the exit status."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(args=argv)
    train(script_args, training_args, model_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
