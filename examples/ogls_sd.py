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
python examples/ogls_sd.py --config recipes/ogls_sd/toy.yaml
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

from trl_distill.scripts.ogls_sd import make_parser, train


if __name__ == "__main__":
    # the `trl-distill ogls-sd` job: same arguments, same loaders, resumes with --resume_from_checkpoint
    script_args, training_args, model_args = make_parser(prog=None).parse_args_and_config()
    train(script_args, training_args, model_args)
