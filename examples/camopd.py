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
copy of the student (`--domain_teacher` overrides it). Teachers load in 4-bit with `--teacher_load_in_4bit` (CUDA and
bitsandbytes); `--use_peft` trains a LoRA student.
"""

from trl import ModelConfig, TrlParser, get_peft_config

from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.camopd.train_cli import CaMOPDScriptArguments, load_models_and_prompts
from trl_distill.script_utils import quantization_config, student_init_kwargs


def main(script_args: CaMOPDScriptArguments, training_args: CaMOPDConfig, model_args: ModelConfig):
    # --lab: cached tiny student/teachers and lab prompts; else model paths and prompt files (or hub ids)
    student, tokenizer, teachers, sources = load_models_and_prompts(script_args, model_args)
    training_args.model_init_kwargs = student_init_kwargs(model_args, training_args)

    trainer = CaMOPDTrainer(
        model=student,
        teacher_model=teachers,  # {"general": ..., "domain": ...}
        args=training_args,
        train_dataset={
            training_args.recovery_source: sources["general"],
            training_args.review_source: sources["domain"],
        },
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=None if script_args.lab else quantization_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((CaMOPDScriptArguments, CaMOPDConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
