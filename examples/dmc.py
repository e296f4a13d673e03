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
python examples/dmc.py --config recipes/dmc/toy.yaml --lab
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

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from trl_distill.dmc.cli import DMCDataArguments
from trl_distill.dmc.dmc_callback import CandidateDatasets, DMCArguments, DMCCallback
from trl_distill.dmc.train_cli import load_student


def main(data_args: DMCDataArguments, dmc_args: DMCArguments, training_args: SFTConfig, model_args: ModelConfig):
    # --lab: the toy world's candidate datasets, dev split, verifier and briefly pre-trained student
    datasets, dev, verifier = data_args.load()
    model, tokenizer = load_student(data_args, training_args, model_args)

    candidates = CandidateDatasets(datasets)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=candidates.train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.add_callback(DMCCallback(candidates, dev, verifier, args=dmc_args, trainer=trainer))
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((DMCDataArguments, DMCArguments, SFTConfig, ModelConfig))
    data_args, dmc_args, training_args, model_args = parser.parse_args_and_config()
    main(data_args, dmc_args, training_args, model_args)
