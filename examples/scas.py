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
python examples/scas.py --config recipes/scas/toy.yaml
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

from trl_distill.scripts.scas import make_parser, train


if __name__ == "__main__":
    # the `trl-distill scas` job: same arguments, same loaders, resumes with --resume_from_checkpoint
    script_args, training_args, model_args = make_parser(prog=None).parse_args_and_config()
    train(script_args, training_args, model_args)
