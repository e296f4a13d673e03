"""DMCCallback on SFTTrainer and on SCASTrainer, with candidate datasets in each SFT format that carries a response."""

import re

import pytest
from datasets import Dataset
from sft_formats import ANSWERS, FORMATS, PAIRS
from trl import SFTConfig, SFTTrainer

from trl_distill.dmc.compatibility import check_response_dataset
from trl_distill.dmc.dmc_callback import CandidateDatasets, DMCCallback
from trl_distill.lab.world.models import tiny_model
from trl_distill.scas.scas_trainer import SCASTrainer


RESPONSE_FORMATS = sorted(set(FORMATS) - {"input_ids"})


def verifier(prompts, completions, answer, **kwargs):
    rewards = []
    for completion, expected in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        found = re.findall(r"Answer: (\d+)", text)
        rewards.append(float(bool(found) and found[-1] == expected))
    return rewards


def candidate(fmt, tokenizer, wrong_every=0):
    """The PAIRS in format `fmt`, every `wrong_every`-th answer wrong, with the reference `answer` column."""
    pairs = [
        (q, a.replace(f"Answer: {e}", "Answer: 99") if wrong_every and i % wrong_every == 0 else a)
        for i, ((q, a), e) in enumerate(zip(PAIRS, ANSWERS))
    ]
    import sft_formats

    saved, sft_formats.PAIRS = sft_formats.PAIRS, pairs
    try:
        dataset = Dataset.from_dict(FORMATS[fmt](tokenizer))
    finally:
        sft_formats.PAIRS = saved
    return dataset.add_column("answer", ANSWERS) if "answer" not in dataset.column_names else dataset


@pytest.mark.parametrize("trainer_class", [SFTTrainer, SCASTrainer])
@pytest.mark.parametrize("fmt", RESPONSE_FORMATS)
def test_dmc_selects_with_each_format(tmp_path, tokenizer, fmt, trainer_class):
    candidates = CandidateDatasets({"good": candidate(fmt, tokenizer), "bad": candidate(fmt, tokenizer, 2)})
    dev = Dataset.from_dict({"prompt": [q for q, _ in PAIRS[:2]], "answer": ANSWERS[:2]})
    args = SFTConfig(
        str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=100,
    )
    trainer = trainer_class(
        tiny_model(tokenizer, "xs"), args, train_dataset=candidates.train_dataset, processing_class=tokenizer
    )
    callback = DMCCallback(
        candidates, dev, verifier, trainer=trainer, strategy="top_dataset", beta=0.0, max_new_tokens=4, dev_size=2
    )
    trainer.add_callback(callback)
    trainer.train()
    scores = callback.scores["datasets"]
    assert scores["good"]["quality"] == 1.0 and scores["bad"]["quality"] == 0.5  # the verifier read each format
    assert scores["good"]["difficulty"] > 0 and scores["bad"]["difficulty"] > 0
    assert callback.sampler.selection == list(candidates.ranges["good"])  # β = 0: quality decides
    assert any("dmc/capability" in entry for entry in trainer.state.log_history)


def test_response_view_of_each_format(tokenizer):
    for fmt in RESPONSE_FORMATS:
        view = check_response_dataset(candidate(fmt, tokenizer), fmt)
        assert {"prompt", "completion", "answer"} <= set(view.column_names)
        text = view[0]["completion"]
        text = text[-1]["content"] if isinstance(text, list) else text
        assert "Answer: 5" in text
    with pytest.raises(ValueError, match="pre-tokenized `input_ids` cannot be verified"):
        check_response_dataset(candidate("input_ids", tokenizer), "tokens")
