"""SCASTrainer's format dispatch: what is a pool, conversational candidates, and TRL's own errors for bad SFT data."""

import pytest
from datasets import Dataset
from sft_formats import FORMATS, sft_dataset
from trl import SFTConfig, SFTTrainer

from trl_distill.core.pool import is_candidate_pool, to_grouped_pool, to_long_pool
from trl_distill.lab.world.models import tiny_model
from trl_distill.scas.scas_config import SCASConfig
from trl_distill.scas.scas_trainer import POOL_ROW, SCASTrainer
from trl_distill.scas.scoring import scas_scores


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def config(tmp_path, **overrides):
    values = dict(per_device_train_batch_size=2, max_steps=2, report_to=[], save_strategy="no", use_cpu=True)
    return SCASConfig(str(tmp_path), **{**values, **overrides})


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_sft_formats_are_not_pools(tokenizer, fmt):
    assert not is_candidate_pool(sft_dataset(fmt, tokenizer))


def test_pool_columns_make_a_pool():
    for columns in ({"candidates": [[]]}, {"prompt_id": [0]}, {"teacher": ["a"]}):
        assert is_candidate_pool(Dataset.from_dict({"prompt": ["q"], "completion": ["a"], **columns}))


def test_partial_pool_columns_are_an_error_not_plain_sft(tmp_path, tokenizer):
    # `teacher` without `prompt_id`: a pool, so the missing column is named instead of training every answer
    flagged = Dataset.from_dict({"prompt": ["Q1", "Q2"], "completion": ["A", "B"], "teacher": ["a", "b"]})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['correct', 'prompt_id'\]"):
        SCASTrainer(tiny_model(tokenizer, "xs"), config(tmp_path), train_dataset=flagged, processing_class=tokenizer)


MESSAGES_POOL = [
    {
        "prompt_id": 0,
        "teacher": "a",
        "correct": True,
        "messages": user("Compute 1+1.") + assistant("1+1 = 2. Answer: 2"),
    },
    {"prompt_id": 0, "teacher": "b", "correct": True, "messages": user("Compute 1+1.") + assistant("Answer: 2")},
    {"prompt_id": 1, "teacher": "a", "correct": False, "messages": user("Compute 2+2.") + assistant("Answer: 5")},
    {"prompt_id": 1, "teacher": "b", "correct": True, "messages": user("Compute 2+2.") + assistant("Answer: 4")},
]


def test_messages_candidates_split_into_prompt_and_completion():
    long = to_long_pool(Dataset.from_list(MESSAGES_POOL))
    assert long["prompt"][0] == user("Compute 1+1.") and long["completion"][3] == assistant("Answer: 4")
    grouped = Dataset.from_list(
        [
            {
                "candidates": [
                    {"messages": r["messages"], "teacher": r["teacher"], "correct": r["correct"]} for r in rows
                ]
            }
            for rows in (MESSAGES_POOL[:2], MESSAGES_POOL[2:])
        ]
    )
    from_grouped = to_long_pool(grouped)
    assert from_grouped["prompt"] == long["prompt"] and from_grouped["completion"] == long["completion"]
    assert len(to_grouped_pool(Dataset.from_list(MESSAGES_POOL))) == 2
    mixed = Dataset.from_list(
        [
            {
                "candidates": [
                    {"messages": user("Q1") + assistant("A"), "teacher": "a", "correct": True},
                    {"messages": user("Q2") + assistant("A"), "teacher": "b", "correct": True},
                ]
            }
        ]
    )
    with pytest.raises(ValueError, match="Row 0, candidate 1: its `messages` start with other prompt turns"):
        to_long_pool(mixed)
    no_answer = Dataset.from_list([{**MESSAGES_POOL[0], "messages": user("Q")}])
    with pytest.raises(ValueError, match="Row 0: `messages` must end with the assistant's answer"):
        to_long_pool(no_answer)


@pytest.mark.parametrize("form", ["messages", "prompt_completion_messages"])
def test_scas_trains_a_conversational_pool(tmp_path, chat_tokenizer, form):
    rows = MESSAGES_POOL
    if form == "prompt_completion_messages":
        rows = [
            {
                **{k: v for k, v in r.items() if k != "messages"},
                "prompt": r["messages"][:1],
                "completion": r["messages"][1:],
            }
            for r in rows
        ]
    trainer = SCASTrainer(
        tiny_model(chat_tokenizer, "xs", "llama"),
        config(tmp_path, num_train_epochs=1, max_steps=-1, q_nll_scope="prompt_no_gen"),
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
    )
    trainer.train()
    selected = trainer.scas_callback.history[0]["selected_rows"]
    assert sorted(trainer.scas_callback.pool["prompt_id"][r] for r in selected) == [0, 1]
    assert 2 not in selected  # the wrong answer never competes
    # the prepared rows are exactly the scored sequences
    features = trainer.scas_callback.features
    for row in trainer.train_dataset:
        assert row["input_ids"] == features[row[POOL_ROW]]["input_ids"]
    # scored from SFTTrainer's tokenization, they score as the standalone scorer's own tokenization does
    via_trainer = trainer.scas_callback.score(trainer.model)
    standalone = scas_scores(trainer.model, chat_tokenizer, Dataset.from_list(rows), q_nll_scope="prompt_no_gen")
    assert [s is not None for s in via_trainer] == [True, True, False, True]
    for mine, theirs in zip(via_trainer, standalone):
        if mine is not None:
            assert mine == pytest.approx(theirs, abs=1e-6)
    assert via_trainer[0]["num_answer_tokens"] > via_trainer[1]["num_answer_tokens"]  # the scores are not all alike


def test_trl_errors_win_for_bad_sft_data(tmp_path, tokenizer):
    """A bad plain dataset gets SFTTrainer's own error from SCASTrainer, not a pool-format error."""
    args = SFTConfig(str(tmp_path), report_to=[], use_cpu=True, assistant_only_loss=True)
    bad = sft_dataset("text", tokenizer)  # assistant_only_loss needs a conversational dataset
    errors = []
    for cls in (SFTTrainer, SCASTrainer):
        with pytest.raises(ValueError) as error:
            cls(tiny_model(tokenizer, "xs"), args, train_dataset=bad, processing_class=tokenizer)
        errors.append(str(error.value))
    assert errors[0] == errors[1] and "pool" not in errors[1]
    unknown = Dataset.from_dict({"question": ["Q"], "response": ["A"]})
    errors = []
    for cls in (SFTTrainer, SCASTrainer):
        with pytest.raises(Exception) as error:
            cls(
                tiny_model(tokenizer, "xs"),
                SFTConfig(str(tmp_path), report_to=[], use_cpu=True),
                train_dataset=unknown,
                processing_class=tokenizer,
            )
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1]


def test_prompt_no_gen_header_follows_a_rows_chat_template_kwargs(tmp_path):
    """Qwen3 with `enable_thinking=False` puts an empty think block into the assistant header: the header that
    `q_nll_scope="prompt_no_gen"` leaves out must be the one the row is trained with, in the trainer and standalone."""
    from chat_tokenizers import build_chat_tokenizer

    from trl_distill.scas.scoring import generation_prompt_length

    tok = build_chat_tokenizer("qwen3")
    prompt, completion = user("Compute 1+1."), assistant("Answer: 2")
    # by hand: the header strings the template appends, tokenized alone
    plain = len(tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    thinking_off = len(tok("<|im_start|>assistant\n<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"])
    assert generation_prompt_length(tok, prompt, completion) == plain
    off = {"enable_thinking": False}
    assert generation_prompt_length(tok, prompt, completion, chat_template_kwargs=off) == thinking_off > plain

    rows = [{**r, "chat_template_kwargs": off if r["prompt_id"] == 0 else {}} for r in MESSAGES_POOL]
    trainer = SCASTrainer(
        tiny_model(tok, "xs", "llama"),
        config(tmp_path, num_train_epochs=1, max_steps=-1, q_nll_scope="prompt_no_gen"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    features, pool = trainer.scas_callback.features, trainer.scas_callback.pool
    for feature, pid in zip(features, pool["prompt_id"]):
        assert sum(feature["generation_prompt_mask"]) == (thinking_off if pid == 0 else plain)
    via_trainer = trainer.scas_callback.score(trainer.model)
    standalone = scas_scores(trainer.model, tok, Dataset.from_list(rows), q_nll_scope="prompt_no_gen")
    for mine, theirs in zip(via_trainer, standalone):
        if mine is not None:
            assert mine == pytest.approx(theirs, abs=1e-6)
