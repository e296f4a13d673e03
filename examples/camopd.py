# Copyright 2026 The trl-distill authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# /// script
# dependencies = [
#     "trl-distill",
# ]
# ///

"""
CaMOPD: recover the general ability of a domain-specialised model by on-policy distillation from a general teacher
(on proxy general prompts) and a frozen copy of the specialised model (on domain prompts), alternating K recovery
steps with one domain-review step and training on the largest-gap samples.

# Tiny world (CPU, a couple of minutes): an arithmetic-specialised student, a general (string-task) teacher
```bash
python examples/camopd.py --config recipes/camopd/toy.yaml --lab
```

# Real scale
```bash
accelerate launch --config_file recipes/accelerate/zero3.yaml examples/camopd.py \
    --config recipes/camopd/qwen2.5-7b-medical.yaml \
    --model_name_or_path <your specialised model> \
    --general_teacher Qwen/Qwen2.5-7B-Instruct \
    --general_prompts <proxy general prompts: jsonl/parquet path or hub id> \
    --domain_prompts <domain prompts: jsonl/parquet path or hub id>
```

Prompt datasets need a `prompt` column (plain text or a list of messages). The domain teacher defaults to a frozen
copy of the student (`--domain_teacher` overrides it).
"""

import os
from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer


@dataclass
class CaMOPDScriptArguments:
    r"""
    Script arguments for the CaMOPD example.

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
    extension = os.path.splitext(name_or_path)[1].lstrip(".")
    if extension in ("jsonl", "json", "parquet", "csv"):
        return load_dataset("json" if extension == "jsonl" else extension, data_files=name_or_path, split="train")
    return load_dataset(name_or_path, split=split)


def lab_world(script_args: CaMOPDScriptArguments):
    """Student specialised on arithmetic, general teacher trained on string tasks, and both prompt sources."""
    from trl_distill.lab.models import cached_model, pretrain, tiny_model
    from trl_distill.lab.tasks import DOMAIN_TASKS, GENERAL_TASKS, make_task_splits
    from trl_distill.lab.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    general = make_task_splits(GENERAL_TASKS, 512, 32, 32, seed=0)
    domain = make_task_splits(DOMAIN_TASKS, 512, 32, 32, seed=0)
    steps = script_args.lab_pretrain_steps

    def build(tasks, seed):
        model = tiny_model(tokenizer, "xs", "qwen2", seed=seed)
        pretrain(model, tokenizer, tasks["train"], steps=steps, batch_size=32, seed=seed)
        return model

    _, student_path = cached_model(
        tokenizer, {"name": "camopd-student", "tasks": "arithmetic", "steps": steps}, lambda: build(domain, 0)
    )
    _, teacher_path = cached_model(
        tokenizer, {"name": "camopd-general", "tasks": "general", "steps": steps}, lambda: build(general, 1)
    )
    return tokenizer, student_path, teacher_path, student_path, general["train"], domain["train"]


def main(script_args: CaMOPDScriptArguments, training_args: CaMOPDConfig, model_args: ModelConfig):
    if script_args.lab:
        tokenizer, student, general_teacher, domain_teacher, general, domain = lab_world(script_args)
    else:
        if not (script_args.general_teacher and script_args.general_prompts and script_args.domain_prompts):
            raise ValueError("Give --general_teacher, --general_prompts and --domain_prompts, or use --lab.")
        student = model_args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(student, padding_side="left")
        general_teacher = script_args.general_teacher
        domain_teacher = script_args.domain_teacher or student
        general = load_prompts(script_args.general_prompts, script_args.dataset_split)
        domain = load_prompts(script_args.domain_prompts, script_args.dataset_split)
    tokenizer.padding_side = "left"

    trainer = CaMOPDTrainer(
        model=AutoModelForCausalLM.from_pretrained(student, dtype=model_args.dtype or "auto"),
        teacher_model={"general": general_teacher, "domain": domain_teacher},
        args=training_args,
        train_dataset={training_args.recovery_source: general, training_args.review_source: domain},
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((CaMOPDScriptArguments, CaMOPDConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
