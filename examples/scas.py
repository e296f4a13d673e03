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

The pool is one row per answer (`prompt_id`, `prompt`, `completion`, `teacher`, `correct`) or one row per prompt
(`prompt`, `candidates`); see `docs/scas.md`.
"""

import os
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser

from trl_distill.scas.cli import load_pool
from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import SCASTrainer


@dataclass
class ScriptArguments:
    """
    Arguments of the SCAS example script.

    Args:
        dataset_name (`str`, *optional*): the candidate pool: a `.jsonl`/`.json`/`.parquet` file, a `save_to_disk`
            directory or a Hub dataset id. Not needed with `--lab`.
        lab (`bool`, defaults to `False`): train a random-init tiny Qwen2 student on the tiny world's arithmetic pool
            (5 teachers, one of them half wrong), offline.
        lab_prompts (`int`, defaults to 64): prompts in the tiny-world pool.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Candidate pool (file, directory or hub id)."})
    lab: bool = field(default=False, metadata={"help": "Run on the offline tiny world."})
    lab_prompts: int = field(default=64, metadata={"help": "Prompts in the tiny-world pool."})


def main(script_args: ScriptArguments, training_args: SCASConfig, model_args: ModelConfig):
    if script_args.lab:
        from trl_distill.lab.models import tiny_model
        from trl_distill.lab.tokenizer import build_tokenizer
        from trl_distill.scas.toy import toy_pool

        tokenizer = build_tokenizer()
        model = tiny_model(tokenizer, "s", "qwen2", seed=training_args.seed)
        pool = toy_pool(script_args.lab_prompts)
    else:
        if model_args.model_name_or_path is None or script_args.dataset_name is None:
            raise ValueError("Give --model_name_or_path and --dataset_name (a candidate pool), or --lab.")
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation
        )
        pool = load_pool(script_args.dataset_name)

    trainer = SCASTrainer(model=model, args=training_args, train_dataset=pool, processing_class=tokenizer)
    trainer.train()
    for record in trainer.scas_callback.history if trainer.scas_callback else []:
        print(f"round at epoch {record['epoch']}: {record['metrics']}")
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = TrlParser((ScriptArguments, SCASConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
