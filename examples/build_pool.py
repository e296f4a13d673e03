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

The same as a command: `trl-distill build-pool --config recipes/build_pool/deepmath-4teachers.yaml`.
"""

from dataclasses import asdict, dataclass, field

from trl import TrlParser

from trl_distill.pool.build_pool_config import BuildPoolConfig
from trl_distill.pool.builder import build_pool
from trl_distill.pool.cli import load_prompt_dataset


@dataclass
class LabArguments:
    r"""
    Tiny-world switches of the example.

    Args:
        lab (`bool`, *optional*, defaults to `False`):
            Run offline on the tiny world: a teacher whose model is `lab:<style>` is an `xs` Llama pre-trained on
            arithmetic written in that style (`cot`, `terse`, `verbose`, `equation`; cached locally), and the prompts
            are held-out arithmetic problems.
        lab_prompts (`int`, *optional*, defaults to `64`):
            Number of tiny-world prompts.
        lab_pretrain_steps (`int`, *optional*, defaults to `300`):
            Pre-training steps of each tiny-world teacher.
    """

    lab: bool = field(default=False, metadata={"help": "Run on the offline tiny world."})
    lab_prompts: int = field(default=64, metadata={"help": "Number of tiny-world prompts."})
    lab_pretrain_steps: int = field(default=300, metadata={"help": "Pre-training steps of each tiny-world teacher."})


def lab_world(config: BuildPoolConfig, lab_args: LabArguments):
    """The teachers with `lab:<style>` models replaced by cached tiny-world teachers, and held-out prompts."""
    from trl_distill.lab.models import cached_model, pretrain, tiny_model
    from trl_distill.lab.tasks import make_task_splits
    from trl_distill.lab.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    steps = lab_args.lab_pretrain_steps
    teachers = []
    for seed, spec in enumerate(config.teacher_specs):
        spec = asdict(spec)
        if spec["model"].startswith("lab:"):
            style = spec["model"].removeprefix("lab:")
            train = make_task_splits(("arithmetic",), 1024, 16, 16, seed=0, style=style)["train"]

            def build(train=train, seed=seed):
                model = tiny_model(tokenizer, "xs", "llama", seed=seed)
                pretrain(model, tokenizer, train, steps=steps, batch_size=32, seed=seed)
                return model

            key = {"name": f"pool-teacher-{style}", "style": style, "steps": steps, "seed": seed}
            _, spec["model"] = cached_model(tokenizer, key, build)
        teachers.append(spec)
    prompts = make_task_splits(("arithmetic",), 16, 16, lab_args.lab_prompts, seed=0)["test"]
    return teachers, prompts


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
