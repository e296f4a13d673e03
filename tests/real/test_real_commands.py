"""Every training command (`scas`, `dmc`, `ogls-sd`, `camopd`) runs one step on SmolLM2-135M-Instruct from files on
disk, as a user types it, and saves a checkpoint whose log has a finite loss."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from trl_distill.cli import main as cli_main


SHOT = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4\nAnswer: 4"}]
SUMS = [(3, 4), (5, 2), (6, 1), (2, 7)]


def ask(a, b):
    return SHOT + [{"role": "user", "content": f"What is {a} + {b}?"}]


def answer(a, b, style):
    return (
        f"{a} + {b} = {a + b}\nAnswer: {a + b}"
        if style == "terse"
        else f"Adding {b} to {a} gives {a + b}.\nAnswer: {a + b}"
    )


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def command_args(job, model, tmp_path):
    files = tmp_path / "data"
    files.mkdir()
    if job == "scas":
        pool = [
            {"prompt_id": i, "prompt": ask(a, b), "completion": [{"role": "assistant", "content": answer(a, b, s)}],
             "teacher": s, "correct": True}
            for i, (a, b) in enumerate(SUMS) for s in ("terse", "worded")
        ]  # fmt: skip
        return ["--dataset_name", write_jsonl(files / "pool.jsonl", pool), "--max_length", "96"]
    if job == "dmc":
        sets = {
            s: write_jsonl(
                files / f"{s}.jsonl",
                [
                    {
                        "prompt": ask(a, b),
                        "completion": [{"role": "assistant", "content": answer(a, b, s)}],
                        "answer": str(a + b),
                    }
                    for a, b in SUMS
                ],
            )
            for s in ("terse", "worded")
        }
        dev = write_jsonl(files / "dev.jsonl", [{"prompt": ask(a, b), "answer": str(a + b)} for a, b in SUMS[:2]])
        return [
            *["--datasets", f"terse={sets['terse']}", f"worded={sets['worded']}", "--dev_dataset", dev],
            *["--verifier", "numeric", "--probe_size", "2", "--dev_size", "2", "--max_new_tokens", "12"],
            *["--max_length", "96"],
        ]
    prompts = [
        {"prompt": ask(a, b), "answer": str(a + b), "privileged_context": answer(a, b, "terse")} for a, b in SUMS
    ]
    if job == "ogls-sd":
        return [
            *["--dataset_name", write_jsonl(files / "sums.jsonl", prompts), "--reward", "numeric"],
            *["--num_generations", "2", "--max_completion_length", "8"],
        ]
    general = [{"prompt": [{"role": "user", "content": q}]} for q in ("Name a colour.", "Name a fruit.")]
    return [
        *["--general_teacher", model, "--domain_teacher", model],
        *["--general_prompts", write_jsonl(files / "general.jsonl", general)],
        *["--domain_prompts", write_jsonl(files / "domain.jsonl", [{"prompt": p["prompt"]} for p in prompts])],
        *["--max_completion_length", "8", "--gradient_coherence_every", "0"],
    ]


@pytest.mark.parametrize("job", ["scas", "dmc", "ogls-sd", "camopd"])
def test_each_training_command_trains_one_step_on_smollm2(job, smollm2_dir, tmp_path):
    out = tmp_path / "out"
    argv = [job, "--model_name_or_path", smollm2_dir, "--output_dir", str(out), "--use_cpu", "--max_steps", "1"]
    argv += ["--per_device_train_batch_size", "2", "--optim", "sgd", "--learning_rate", "1e-5", "--logging_steps", "1"]
    argv += ["--report_to", "none", "--save_strategy", "no", *command_args(job, smollm2_dir, tmp_path)]
    assert cli_main(argv) == 0
    trained = load_file(str(out / "model.safetensors"))
    base = load_file(os.path.join(smollm2_dir, "model.safetensors"))
    assert trained.keys() == base.keys()
    if job in ("scas", "dmc"):  # SFT on verified answers: one SGD step moves the weights
        assert any(not torch.equal(trained[k], base[k]) for k in base)
