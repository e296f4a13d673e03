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
SFT on the answer that is cheapest to learn for the student (SCAS), chosen per prompt from several teachers' verified
answers and re-chosen every epoch.

# Tiny world (CPU, about a minute; no download)
```bash
python examples/scas.py --config recipes/scas/toy.yaml --lab
```

# Real scale (8 GPUs, ZeRO-3)
```bash
accelerate launch --config_file recipes/accelerate/zero3.yaml examples/scas.py \
    --config recipes/scas/qwen2.5-1.5b.yaml \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name pool.jsonl
```

# LoRA student on one GPU
```bash
python examples/scas.py --config recipes/scas/qwen2.5-1.5b.yaml --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name pool.jsonl --use_peft --lora_r 16 --learning_rate 1e-4
```

The pool is one row per answer (`prompt_id`, `prompt`, `completion`, `teacher`, `correct`) or one row per prompt
(`prompt`, `candidates`); see `docs/scas.md`.
"""

import os

from trl import ModelConfig, TrlParser, get_peft_config

from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import SCASTrainer
from trl_distill.scas.train_cli import SCASScriptArguments, load_model_and_pool
from trl_distill.script_utils import quantization_config


def main(script_args: SCASScriptArguments, training_args: SCASConfig, model_args: ModelConfig):
    # --lab: a random-init tiny student and the tiny world's 5-teacher pool; else a model path and a pool file
    model, tokenizer, pool = load_model_and_pool(script_args, training_args, model_args)

    trainer = SCASTrainer(
        model=model,
        args=training_args,
        train_dataset=pool,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=None if script_args.lab else quantization_config(model_args),
    )
    trainer.train()
    for record in trainer.scas_callback.history if trainer.scas_callback else []:
        print(f"round at epoch {record['epoch']}: {record['metrics']}")
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = TrlParser((SCASScriptArguments, SCASConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
