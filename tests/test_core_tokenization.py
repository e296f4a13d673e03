"""The scored sequence is the trained sequence: `encode_prompt_completion` against `SFTTrainer`'s tokenization for
three real templates (offline reproductions of Qwen3, Llama-3.1 and Gemma-3), and one pad-token helper everywhere."""

import logging

import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from trl_distill.core import tokenizers as tokenizer_helpers
from trl_distill.core.generation import generate_completions
from trl_distill.core.logprobs import encode_prompt_completion
from trl_distill.core.tokenizers import ensure_pad_token
from trl_distill.dmc.compatibility import response_nll
from trl_distill.evaluation.diagnostics import token_diagnostics
from trl_distill.lab.world.models import tiny_model
from trl_distill.scas.scoring import scas_scores


ROWS = {
    "plain": [("Compute 2+3.", " Answer: 5"), ("Say hi.", " hi")],
    "conversational": [
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 2+3."}],
            [{"role": "assistant", "content": "Answer: 5"}],
        ),
        ([{"role": "user", "content": "Say hi."}], [{"role": "assistant", "content": "<think>easy</think>hi"}]),
    ],
}


def sft_tokenization(tokenizer, rows, tmp_path, **columns):
    """(input_ids, completion positions) of each row as SFTTrainer prepares it for training."""
    dataset = Dataset.from_dict({"prompt": [p for p, _ in rows], "completion": [c for _, c in rows], **columns})
    args = SFTConfig(str(tmp_path), report_to=[], use_cpu=True, max_length=None, dataset_num_proc=None)
    trainer = SFTTrainer(tiny_model(tokenizer, "xs", "llama"), args, train_dataset=dataset, processing_class=tokenizer)
    return [(row["input_ids"], [label != -100 for label in row["labels"]]) for row in trainer.train_dataset]


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_scored_sequence_is_the_trained_sequence(chat_tokenizer, kind, tmp_path):
    rows = ROWS[kind]
    trained = sft_tokenization(chat_tokenizer, rows, tmp_path)
    for (prompt, completion), (ids, completion_positions) in zip(rows, trained):
        encoded = encode_prompt_completion(chat_tokenizer, prompt, completion)
        assert encoded["input_ids"] == ids
        assert [bool(m) for m in encoded["completion_mask"]] == completion_positions
        bos = chat_tokenizer.bos_token_id
        if bos is not None:  # Llama-3.1 and Gemma-3 train with exactly one BOS, first
            assert encoded["input_ids"][0] == bos and encoded["input_ids"].count(bos) == 1


def test_template_kwargs_and_tools_reach_the_template(tmp_path):
    from chat_tokenizers import TOOLS_EXAMPLE, build_chat_tokenizer

    tokenizer = build_chat_tokenizer("qwen3")
    rows = ROWS["conversational"][:1]
    trained = sft_tokenization(
        tokenizer, rows, tmp_path, tools=[TOOLS_EXAMPLE], chat_template_kwargs=[{"enable_thinking": False}]
    )
    encoded = encode_prompt_completion(
        tokenizer, *rows[0], tools=TOOLS_EXAMPLE, chat_template_kwargs={"enable_thinking": False}
    )
    assert encoded["input_ids"] == trained[0][0]
    text = tokenizer.decode(encoded["input_ids"])
    assert "calculator" in text and "<think>\n\n</think>" in tokenizer.decode(
        [i for i, m in zip(encoded["input_ids"], encoded["completion_mask"]) if not m]
    )


def test_the_three_templates_keep_their_traits():
    from chat_tokenizers import build_chat_tokenizer

    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    qwen, llama, gemma = (build_chat_tokenizer(k) for k in ("qwen3", "llama31", "gemma3"))
    assert qwen.bos_token is None and "<think>" in qwen.apply_chat_template(messages, tokenize=False)
    assert len(qwen("<think>")["input_ids"]) == 1
    assert llama.pad_token is None and llama.apply_chat_template(messages, tokenize=False).startswith(
        "<|begin_of_text|>"
    )
    assert llama("Q")["input_ids"][0] == llama.bos_token_id
    assert "<start_of_turn>model\n" in gemma.apply_chat_template(messages, tokenize=False)
    assert gemma.padding_side == "left" and gemma("Q")["input_ids"][0] == gemma.bos_token_id


def test_ensure_pad_token_pads_with_eos_and_says_so_once(llama31_tokenizer, caplog):
    tokenizer_helpers._announced.discard(llama31_tokenizer.name_or_path)
    with caplog.at_level(logging.WARNING, logger="trl_distill.core.tokenizers"):
        assert ensure_pad_token(llama31_tokenizer) == llama31_tokenizer.eos_token_id
        assert ensure_pad_token(llama31_tokenizer) == llama31_tokenizer.eos_token_id
    assert llama31_tokenizer.pad_token == "<|eot_id|>"
    assert len([r for r in caplog.records if "has no pad token" in r.message]) == 1
    llama31_tokenizer.pad_token = None
    llama31_tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        ensure_pad_token(llama31_tokenizer)


def test_entry_points_work_without_a_pad_token(llama31_tokenizer):
    """scas_scores, rank_datasets' NLL, token_diagnostics and generation on a tokenizer with no pad token."""
    from chat_tokenizers import build_chat_tokenizer

    model = tiny_model(llama31_tokenizer, "xs", "llama")
    pool = Dataset.from_dict({"prompt": [p for p, _ in ROWS["plain"]], "completion": [c for _, c in ROWS["plain"]]})
    scores = scas_scores(model, build_chat_tokenizer("llama31"), pool, batch_size=2)
    assert len(scores) == 2 and all(s["num_answer_tokens"] > 0 for s in scores)
    nll = response_nll(model, build_chat_tokenizer("llama31"), pool, batch_size=2)
    assert len(nll) == 2 and all(n > 0 for _, n in nll)
    diagnostics = token_diagnostics(model, model, build_chat_tokenizer("llama31"), ["Say hi.", "Compute 2+3."])
    assert diagnostics["num_tokens"] > 0
    tokenizer = build_chat_tokenizer("llama31")
    seen = []
    original = model.generate

    def recording_generate(**kwargs):
        seen.append(kwargs["input_ids"])
        return original(**kwargs)

    model.generate = recording_generate
    out = generate_completions(model, tokenizer, ["Say hi.", [{"role": "user", "content": "Q"}]], max_new_tokens=2)
    assert len(out) == 2 and tokenizer.pad_token == tokenizer.eos_token
    # left padded: the plain prompt starts with the BOS that training puts there, the chat prompt has exactly one
    for row in seen[0].tolist():
        real = [i for i in row if i != tokenizer.pad_token_id]
        assert real[0] == tokenizer.bos_token_id and real.count(tokenizer.bos_token_id) == 1
