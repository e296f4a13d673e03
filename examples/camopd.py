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
python examples/camopd.py --config recipes/camopd/toy.yaml
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

from trl_distill.scripts.camopd import make_parser, train


if __name__ == "__main__":
    # the `trl-distill camopd` job: same arguments, same loaders, resumes with --resume_from_checkpoint
    script_args, training_args, model_args = make_parser(prog=None).parse_args_and_config()
    train(script_args, training_args, model_args)
