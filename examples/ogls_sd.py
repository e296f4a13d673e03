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
OGLS-SD: on-policy self-distillation where the teacher is the model itself shown a reference solution, steered
along the direction that separates the teacher's view of successful rollouts from failed ones.

# Tiny world (CPU, a few minutes): an `xs` student briefly pre-trained on arithmetic, privileged context = the
# reference solution, verifier = the tiny world's task reward
```bash
python examples/ogls_sd.py --config recipes/ogls_sd/toy.yaml --lab
```

# Real scale
```bash
accelerate launch --config_file recipes/accelerate/zero2.yaml examples/ogls_sd.py \
    --config recipes/ogls_sd/qwen2.5-1.5b-math.yaml \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --dataset_name <dataset with prompt, a reference solution and an answer column> \
    --privileged_context_column solution
```

The dataset needs a `prompt` column (plain text or messages), the privileged context (`--privileged_context_column`,
renamed to `privileged_context`) and an `answer` column for the default `numeric` verifier.
"""

from transformers import AutoModelForCausalLM
from trl import ModelConfig, TrlParser, get_peft_config

from trl_distill.ogls_sd.cli import OGLSSDScriptArguments, load_model_and_data
from trl_distill.ogls_sd.ogls_sd_config import OGLSSDConfig
from trl_distill.ogls_sd.ogls_sd_trainer import OGLSSDTrainer


def main(script_args: OGLSSDScriptArguments, training_args: OGLSSDConfig, model_args: ModelConfig):
    # --lab: a briefly pre-trained tiny student, arithmetic rows, task_reward; else a model and a dataset
    model_path, tokenizer, data, reward = load_model_and_data(script_args, model_args)

    trainer = OGLSSDTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_path, dtype=model_args.dtype or "auto"),
        reward_funcs=reward,
        args=training_args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((OGLSSDScriptArguments, OGLSSDConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
