"""SCASTrainer on the inputs of issue 14/15: a released pool directory, max_length truncation, empty datasets."""

import json
import logging

import pytest
from datasets import Dataset

from trl_distill.lab.world.models import tiny_model
from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import SCASTrainer
from trl_distill.scas.scoring import encode_pool


def config(tmp_path, **overrides):
    values = dict(per_device_train_batch_size=2, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    return SCASConfig(str(tmp_path / "out"), **(values | overrides))


def test_a_released_pool_directory_is_a_train_dataset(tmp_path, tokenizer):
    corpus = tmp_path / "deepscaler"
    corpus.mkdir()
    for teacher, answers in (("qwen3-32b", ["Answer: 3", "Answer: 9"]), ("phi-4", ["1+2=3. Answer: 3", "Answer: 9"])):
        rows = [
            {
                "id": i,
                "source_dataset": "deepscaler",
                "teacher_name": teacher,
                "system": "",
                "instruction": q,
                "teacher_output": a,
                "reference_answer": r,
                "reference_solution": "",
                "is_common_correct": True,
            }
            for i, (q, a, r) in enumerate(zip(["Compute 1+2.", "Compute 3*3."], answers, ["3", "9"]))
        ]
        (corpus / f"{teacher}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = SCASTrainer(
        tiny_model(tokenizer, "xs"),
        config(tmp_path, num_train_epochs=1),
        train_dataset=str(corpus),
        processing_class=tokenizer,
    )
    assert trainer._scas_pool["teacher"] == ["phi-4", "phi-4", "qwen3-32b", "qwen3-32b"]
    assert trainer._scas_num_prompts == 2
    trainer.train()
    assert len(trainer.scas_callback.history) == 1


def truncation_pool():
    prompt = [{"role": "user", "content": "Compute 1+2 and explain."}]
    answers = ["Answer: 3", "One plus two makes three, so the final result is Answer: 3"]
    return Dataset.from_list(
        [
            {
                "prompt_id": 0,
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": a}],
                "teacher": f"t{j}",
                "correct": True,
            }
            for j, a in enumerate(answers)
        ]
    )


def test_max_length_that_cuts_every_answer_says_so(tmp_path, tokenizer):
    pool = truncation_pool()
    prompt_length = encode_pool(tokenizer, pool)[0]["completion_mask"].index(1)
    with pytest.raises(
        ValueError, match=rf"max_length={prompt_length - 2} leaves no answer token of any of the 2 candidates"
    ):
        SCASTrainer(
            tiny_model(tokenizer, "xs"),
            config(tmp_path, max_length=prompt_length - 2),
            train_dataset=pool,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    ("truncation_mode", "completion_only_loss"), [("keep_start", None), ("keep_end", None), ("keep_end", False)]
)
def test_partial_truncation_is_scored_as_trained_and_counted(
    tmp_path, tokenizer, caplog, truncation_mode, completion_only_loss
):
    pool = truncation_pool()
    full = encode_pool(tokenizer, pool)  # the standalone scorer's sequences, uncut
    max_length = len(full[0]["input_ids"]) + 3  # the short answer fits, the long one is cut
    with caplog.at_level(logging.WARNING, logger="trl_distill.scas"):
        trainer = SCASTrainer(
            tiny_model(tokenizer, "xs"),
            config(
                tmp_path,
                max_length=max_length,
                truncation_mode=truncation_mode,
                completion_only_loss=completion_only_loss,
            ),
            train_dataset=pool,
            processing_class=tokenizer,
        )
    assert "1 of 2 candidate answers are cut by max_length" in caplog.text
    scored = trainer.scas_callback.features
    trained = dict(zip(trainer.train_dataset["_scas_pool_row"], trainer.train_dataset["input_ids"]))
    assert [scored[i]["input_ids"] for i in range(2)] == [trained[i] for i in range(2)]
    cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
    for key in ("input_ids", "completion_mask", "special_mask"):  # the uncut sequence, cut as SFTTrainer cuts it
        assert [f[key] for f in scored] == [full[0][key], full[1][key][cut]], key
    assert [len(f["input_ids"]) for f in scored] == [len(full[0]["input_ids"]), max_length]


def test_empty_datasets_raise_and_unverified_sft_rows_are_counted_before_training(tmp_path, tokenizer, caplog):
    model = tiny_model(tokenizer, "xs")
    with pytest.raises(ValueError, match="The dataset is empty"):
        SCASTrainer(
            model,
            config(tmp_path),
            train_dataset=Dataset.from_dict({"prompt": [], "completion": []}),
            processing_class=tokenizer,
        )
    # `correct` without `prompt_id`/`teacher` is plain SFT data (as DMC's candidate datasets are): trained as SFTTrainer
    # trains it, with the wrong rows counted in a warning, not silently
    mixed = Dataset.from_dict({"prompt": ["p", "p"], "completion": ["right", "wrong"], "correct": [True, False]})
    with caplog.at_level("WARNING", logger="trl_distill.scas.scas_trainer"):
        SCASTrainer(model, config(tmp_path), train_dataset=mixed, processing_class=tokenizer)
    assert "including its 1 row(s) with correct=False" in caplog.text
