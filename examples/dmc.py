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
SFT on several candidate distillation datasets, reselected every epoch by data–model compatibility (DMC): the
top-DMC dataset, a softmax(DMC/τ) mixture, or the top fraction of examples, with the student as it is now.

# Tiny world (CPU, a few minutes; no download)
```bash
python examples/dmc.py --config recipes/dmc/toy.yaml
```

# Real scale (8 GPUs, ZeRO-3)
```bash
accelerate launch --config_file recipes/accelerate/zero3.yaml examples/dmc.py \
    --config recipes/dmc/qwen2.5-1.5b-math.yaml \
    --datasets qwq=data/qwq.jsonl r1=data/r1.jsonl short=data/short.jsonl --dev_dataset data/dev.jsonl
```

Each candidate dataset holds prompt–completion rows with a `correct` flag (or an `answer` column the verifier
checks); the dev split holds held-out prompts with their `answer`. See `docs/dmc.md`.
"""

from trl_distill.scripts.dmc import make_parser, train


if __name__ == "__main__":
    # the `trl-distill dmc` job: same arguments, same loaders, resumes with --resume_from_checkpoint
    data_args, dmc_args, training_args, model_args = make_parser(prog=None).parse_args_and_config()
    train(data_args, dmc_args, training_args, model_args)
