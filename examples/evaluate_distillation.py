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
#     "trl-distill[eval]",
# ]
# ///

"""
Quantify how much a distilled student took from its teacher (Lee et al., 2025): RSE of the student against the
teacher, ICE of the student, and, when both share a tokenizer, token-level KL/JS and top-1 agreement.

# Automatic judge (no judge model; scores rank students but are not comparable to LLM-judge scores)
```bash
python examples/evaluate_distillation.py \
    --student_model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
    --teacher_model_name_or_path Qwen/Qwen2.5-7B-Instruct \
    --prompts_file prompts.jsonl \
    --identity_name Qwen --identity_organisation "Alibaba Cloud" \
    --output_dir eval-qwen-0.5b
```

# LLM judge behind an OpenAI-compatible server (key read from $OPENAI_API_KEY)
```bash
python examples/evaluate_distillation.py \
    --student_model_name_or_path ./my-student \
    --teacher_model_name_or_path Qwen/Qwen2.5-7B-Instruct \
    --prompts_file prompts.jsonl \
    --identity_name Qwen --identity_organisation "Alibaba Cloud" \
    --judge http --judge_url https://api.openai.com/v1 --judge_model gpt-4o-mini \
    --output_dir eval-my-student
```

`prompts.jsonl` holds one `{"dataset": ..., "prompt": ...}` per line.
"""

import json
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

from trl_distill.evaluation.diagnostics import token_diagnostics
from trl_distill.evaluation.ice import ice
from trl_distill.evaluation.judges import AutomaticJudge, IdentityClaimJudge, OpenAICompatibleJudge
from trl_distill.evaluation.rse import rse


@dataclass
class ScriptArguments:
    """
    Arguments of the evaluation script.

    Args:
        student_model_name_or_path (`str`): the distilled model under test.
        teacher_model_name_or_path (`str`): the reference model (RSE) and the teacher (token diagnostics).
        prompts_file (`str`): JSONL prompts with a `dataset` field.
        identity_name (`str`), identity_organisation (`str`): the student's true identity, for ICE.
        judge (`str`): `"auto"` (ROUGE-L + chrF; the ICE judge is then rule-based) or `"http"`.
        judge_url (`str`), judge_model (`str`), api_key_env (`str`): the OpenAI-compatible judge, for `"http"`.
        ice_languages (`list[str]`): languages of the identity questions.
        ice_max_prompts (`int`): evaluate a seeded random subset of the ICE prompts.
        max_new_tokens (`int`), batch_size (`int`): generation settings.
        output_dir (`str`): where `rse.json`, `ice.json` and `diagnostics.json` go.
    """

    student_model_name_or_path: str = field(metadata={"help": "The distilled model under test."})
    teacher_model_name_or_path: str = field(metadata={"help": "The reference/teacher model."})
    prompts_file: str = field(metadata={"help": "JSONL prompts with a 'dataset' field."})
    identity_name: str = field(metadata={"help": "The student's true name, e.g. Qwen."})
    identity_organisation: str = field(metadata={"help": "The student's maker, e.g. 'Alibaba Cloud'."})
    judge: str = field(default="auto", metadata={"help": "'auto' or 'http'.", "choices": ["auto", "http"]})
    judge_url: str | None = field(default=None, metadata={"help": "Base URL of an OpenAI-compatible API."})
    judge_model: str | None = field(default=None, metadata={"help": "Model name served at judge_url."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the API key."})
    ice_languages: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "ICE question languages."})
    ice_max_prompts: int | None = field(default=200, metadata={"help": "Seeded subset of the ICE prompts."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation budget per response."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    output_dir: str = field(default="distillation-eval", metadata={"help": "Output directory."})


def load(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tokenizer


def main(script_args: ScriptArguments):
    os.makedirs(script_args.output_dir, exist_ok=True)
    student, student_tokenizer = load(script_args.student_model_name_or_path)
    teacher, teacher_tokenizer = load(script_args.teacher_model_name_or_path)

    prompts: dict[str, list[str]] = {}
    with open(script_args.prompts_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                prompts.setdefault(row.get("dataset", "default"), []).append(row["prompt"])

    if script_args.judge == "http":
        similarity_judge = identity_judge = OpenAICompatibleJudge(
            script_args.judge_url, script_args.judge_model, api_key_env=script_args.api_key_env
        )
    else:
        similarity_judge, identity_judge = AutomaticJudge(), IdentityClaimJudge()

    gen = {"max_new_tokens": script_args.max_new_tokens, "batch_size": script_args.batch_size}
    rse_result = rse(
        prompts,
        model=student,
        tokenizer=student_tokenizer,
        reference_model=teacher,
        reference_tokenizer=teacher_tokenizer,
        judge=similarity_judge,
        **gen,
    )
    print(rse_result.format_table())

    ice_result = ice(
        {"name": script_args.identity_name, "organisation": script_args.identity_organisation},
        model=student,
        tokenizer=student_tokenizer,
        judge=identity_judge,
        languages=script_args.ice_languages,
        max_prompts=script_args.ice_max_prompts,
        **gen,
    )
    print(ice_result.format_table())

    results = {"rse": rse_result.to_dict(), "ice": ice_result.to_dict()}
    # token diagnostics need one vocabulary; score them on the teacher's own responses (what distillation imitates)
    if student_tokenizer.get_vocab() == teacher_tokenizer.get_vocab():
        scored = [pair for pair in rse_result.pairs if pair["reference"].strip()]
        texts = [pair["reference"] for pair in scored]
        chat = student_tokenizer.chat_template is not None
        prompts_flat = [[{"role": "user", "content": pair["prompt"]}] if chat else pair["prompt"] for pair in scored]
        stats = token_diagnostics(student, teacher, student_tokenizer, texts, prompts=prompts_flat)
        print({key: round(value, 4) for key, value in stats.items() if isinstance(value, float)})
        results["diagnostics"] = stats

    for name, value in results.items():
        with open(os.path.join(script_args.output_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=2, default=str)
    print(f"Results written to {script_args.output_dir}")


if __name__ == "__main__":
    parser = TrlParser(ScriptArguments)
    (script_args,) = parser.parse_args_and_config()
    main(script_args)
