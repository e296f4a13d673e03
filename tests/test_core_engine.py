"""The scoring engine, generation and the model cache."""

import torch

from trl_distill.core.engine import score_batches
from trl_distill.core.generation import generate_completions
from trl_distill.core.logprobs import completion_logprobs, encode_prompt_completion
from trl_distill.lab.world.models import cached_model, tiny_model


def _mean_nll(model, batch):
    logprobs = completion_logprobs(model, batch)
    return (-logprobs.sum(-1) / batch.completion_mask.sum(-1)).tolist()


def test_scores_do_not_depend_on_batch_size_or_padding_and_mode_is_restored(tokenizer, tiny_student, arithmetic):
    rows = arithmetic["train"].select(range(7))
    features = [encode_prompt_completion(tokenizer, r["prompt"], r["completion"]) for r in rows]
    tiny_student.train()
    reference = score_batches(tiny_student, features, _mean_nll, tokenizer.pad_token_id, batch_size=1)
    assert tiny_student.training  # restored
    for batch_size, side in ((3, "left"), (7, "right"), (4, "right")):
        got = score_batches(tiny_student, features, _mean_nll, tokenizer.pad_token_id, batch_size, side)
        assert torch.allclose(torch.tensor(got), torch.tensor(reference), atol=1e-5)


def test_greedy_generation_is_batch_independent(tokenizer, tiny_student, arithmetic):
    prompts = arithmetic["test"]["prompt"][:5]
    one_by_one = [generate_completions(tiny_student, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert generate_completions(tiny_student, tokenizer, prompts, max_new_tokens=8, batch_size=5) == one_by_one
    sampled = generate_completions(
        tiny_student, tokenizer, prompts[:2], max_new_tokens=8, do_sample=True, num_return_sequences=3, seed=0
    )
    assert len(sampled) == 6


def test_cached_model_is_built_once(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return tiny_model(tokenizer, "xs", seed=3)

    first, path = cached_model(tokenizer, {"name": "t", "seed": 3}, build)
    second, same_path = cached_model(tokenizer, {"name": "t", "seed": 3}, build)
    assert calls == [1] and path == same_path
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_pretrained_model_is_keyed_by_the_data_content(tmp_path, monkeypatch, tokenizer, arithmetic):
    from trl_distill.lab.world.models import pretrained_model

    monkeypatch.setenv("TRL_DISTILL_CACHE", str(tmp_path))
    train = arithmetic["train"].select(range(8))
    first = pretrained_model(tokenizer, "m", train, steps=1)
    assert pretrained_model(tokenizer, "m", train.select(range(8)), steps=1) == first  # same rows, same model
    assert pretrained_model(tokenizer, "m", arithmetic["dev"].select(range(8)), steps=1) != first
