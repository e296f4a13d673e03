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
Answer pool for SCAS and DMC: several teachers answer every prompt `n` times, each answer is verified, and the pool is
written in shards, so a killed run resumes where it stopped.

# Tiny world (CPU, a couple of minutes the first time): two `xs` teachers pre-trained on arithmetic written in two
# styles (cached locally), held-out arithmetic prompts, the tiny world's verifier
```bash
python examples/build_pool.py --config recipes/build_pool/toy.yaml --lab
```

# Real scale (one teacher at a time through vLLM)
```bash
python examples/build_pool.py --config recipes/build_pool/deepmath-4teachers.yaml
```

The same as a command: `trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml` (or
`--config recipes/build_pool/toy.yaml --lab`).
"""

from dataclasses import asdict

from trl import TrlParser

from trl_distill.pool.build_pool_config import BuildPoolConfig
from trl_distill.pool.builder import build_pool
from trl_distill.pool.cli import LabArguments, lab_world, load_prompt_dataset


def main(config: BuildPoolConfig, lab_args: LabArguments):
    if lab_args.lab:
        teachers, dataset = lab_world(config, lab_args)
    else:
        if not config.dataset_name:
            raise ValueError("Give --dataset_name (a Hub id, a directory or a data file), or use --lab.")
        teachers = config.teachers
        dataset = load_prompt_dataset(config.dataset_name, config.dataset_config, config.dataset_split)
    if config.max_prompts is not None:
        dataset = dataset.select(range(min(config.max_prompts, len(dataset))))
    settings = {k: v for k, v in asdict(config).items() if k != "teachers"}
    pool = build_pool(teachers=teachers, dataset=dataset, **settings)
    print(f"{len(pool)} answers to {len(dataset)} prompts written to {config.output_dir}/pool.jsonl")
    return pool


if __name__ == "__main__":
    parser = TrlParser((BuildPoolConfig, LabArguments))
    config, lab_args = parser.parse_args_and_config()
    main(config, lab_args)
