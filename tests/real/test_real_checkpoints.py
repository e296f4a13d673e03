"""The converted registry checkpoints are plain checkpoints with the real models' traits, and generation stops where
the model's own `generate()` would."""

import json
import os

import pytest
import torch
from real_models import GEMMA3, SMOLLM2, load

from trl_distill.core.checkpoints import CHECKPOINTS, MARKER, fetch_checkpoint
from trl_distill.core.generation import generate_completions, stop_token_ids


@pytest.mark.parametrize("name", [SMOLLM2, GEMMA3])
def test_converted_checkpoint_is_plain_and_equals_the_gguf_model(name, request):
    path = request.getfixturevalue("smollm2_dir" if name == SMOLLM2 else "gemma_dir")
    with open(os.path.join(path, "config.json")) as f:
        assert "quantization_config" not in json.load(f)
    with open(os.path.join(path, MARKER)) as f:
        marker = json.load(f)
    assert marker["sha256"] == CHECKPOINTS[name].sha256
    assert marker["max_abs_logit_diff_vs_gguf"] < 1e-4
    assert fetch_checkpoint(name, show_progress=False) == path  # cached: no second conversion


def test_smollm2_traits(smollm2):
    model, tokenizer = smollm2
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert model.config.tie_word_embeddings and len(tokenizer) == 49152
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_gemma_traits(gemma):
    model, tokenizer = gemma
    assert len(tokenizer) == 262144 and tokenizer.eos_token == "<eos>"
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn == 106 and end_of_turn != tokenizer.eos_token_id
    assert stop_token_ids(model, tokenizer) == [1, 106]
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n"


def test_smollm2_answers_a_chat_question_and_stops_at_its_end_of_turn(smollm2):
    model, tokenizer = smollm2
    [answer] = generate_completions(
        model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=24
    )
    assert "Paris" in answer
    assert "<|im_end|>" not in answer and "user" not in answer


def test_generation_stops_at_the_generation_config_eos_not_only_the_tokenizer_eos(smollm2_other_eos_dir):
    """The tokenizer's EOS (`<|endoftext|>`) is not the end of turn (`<|im_end|>`): the answer ends at the end of
    turn, with no invented turn after it (it ran on into "system ... user ..." when only the tokenizer's id stopped
    generation)."""
    model, tokenizer = load(smollm2_other_eos_dir)
    assert tokenizer.eos_token_id == 0 and stop_token_ids(model, tokenizer) == [0, 2]
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    [answer] = generate_completions(model, tokenizer, [prompt], max_new_tokens=48)
    rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        reference = model.generate(**rendered, max_new_tokens=48, do_sample=False)[0, rendered["input_ids"].shape[1] :]
    assert reference[-1].item() == 2  # the model's own generate() stops at <|im_end|>
    assert answer == tokenizer.decode(reference[:-1], skip_special_tokens=True)
    assert "user" not in answer and "system" not in answer
