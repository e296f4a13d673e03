"""Shared primitives against brute-force full-logit computations."""

import pytest
import torch

from trl_distill.core.divergence import LMHead, generalized_jsd, generalized_jsd_from_logits
from trl_distill.core.logprobs import SequenceBatch, completion_logprobs, encode_prompt_completion


def brute_force_divergence(zs, zt, beta, temperature=1.0):
    # Independent form: probabilities and explicit sums, no log-space tricks.
    ps = torch.softmax(zs.double() / temperature, -1)
    pt = torch.softmax(zt.double() / temperature, -1)
    if beta == 0:
        return (pt * (pt.log() - ps.log())).sum(-1)
    if beta == 1:
        return (ps * (ps.log() - pt.log())).sum(-1)
    m = (1 - beta) * ps + beta * pt
    return beta * (pt * (pt / m).log()).sum(-1) + (1 - beta) * (ps * (ps / m).log()).sum(-1)


def _batch(tokenizer, rows, padding_side):
    features = [encode_prompt_completion(tokenizer, r["prompt"], r["completion"]) for r in rows]
    return SequenceBatch.collate(features, tokenizer.pad_token_id, padding_side)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_completion_logprobs_match_full_logits_per_sequence(tokenizer, tiny_student, arithmetic, padding_side):
    rows = [arithmetic["train"][i] for i in range(5)]
    rows[1] = {**rows[1], "completion": [{"role": "assistant", "content": "Answer: 1234567"}]}  # mixed lengths
    batch = _batch(tokenizer, rows, padding_side)
    with torch.no_grad():
        batched = completion_logprobs(tiny_student, batch)
    for b, row in enumerate(rows):
        single = _batch(tokenizer, [row], "right")
        with torch.no_grad():
            logits = tiny_student(input_ids=single.input_ids).logits[0].double()
        expected = torch.log_softmax(logits[:-1], -1).gather(-1, single.input_ids[0, 1:, None])[:, 0]
        expected = expected * single.completion_mask[0, 1:]
        real = batch.attention_mask[b].bool()
        got = batched[b][real][1:]
        assert torch.allclose(got.double(), expected, atol=1e-5)
        assert batched[b][~real].abs().sum() == 0  # padding contributes nothing


def test_completion_mask_covers_exactly_the_answer(tokenizer):
    enc = encode_prompt_completion(
        tokenizer, [{"role": "user", "content": "Copy: ab"}], [{"role": "assistant", "content": "Answer: ab"}]
    )
    completion = [t for t, m in zip(enc["input_ids"], enc["completion_mask"]) if m]
    assert tokenizer.decode(completion) == "Answer: ab<|im_end|>\n"
    assert tokenizer.decode(enc["input_ids"][: enc["completion_mask"].index(1)]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generalized_jsd_from_logits_matches_brute_force(beta, temperature):
    torch.manual_seed(0)
    zs, zt = torch.randn(3, 5, 11) * 3, torch.randn(3, 5, 11) * 3
    got = generalized_jsd_from_logits(zs, zt, beta, temperature)
    assert torch.allclose(got.double(), brute_force_divergence(zs, zt, beta, temperature), atol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_chunked_jsd_from_hidden_states_matches_brute_force_with_mask_bias_and_scale(beta):
    torch.manual_seed(0)
    B, T, Hs, Ht, V = 2, 6, 8, 12, 37
    hs = torch.randn(B, T, Hs, requires_grad=True)
    ht = torch.randn(B, T, Ht)
    student = LMHead(torch.randn(V, Hs), torch.randn(V), logit_scale=0.5)
    teacher = LMHead(torch.randn(V, Ht), torch.randn(V))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])

    div, entropy = generalized_jsd(hs, student, ht, teacher, mask, beta, temperature=0.9)
    zs = (hs.double() @ student.weight.double().T + student.bias.double()) * 0.5
    zt = ht.double() @ teacher.weight.double().T + teacher.bias.double()
    expected = brute_force_divergence(zs, zt, beta, 0.9) * mask
    assert torch.allclose(div.double(), expected, atol=1e-5)
    ps = torch.softmax(zs / 0.9, -1)
    assert torch.allclose(entropy.double(), -(ps * ps.log()).sum(-1) * mask, atol=1e-5)

    (grad,) = torch.autograd.grad(div.sum(), hs)
    (expected_grad,) = torch.autograd.grad(expected.sum(), hs)
    assert torch.allclose(grad.double(), expected_grad.double(), atol=1e-5)


def test_lm_head_of_reads_the_model(tiny_student):
    head = LMHead.of(tiny_student)
    assert head.weight is tiny_student.lm_head.weight and head.bias is None and head.logit_scale == 1.0
    hidden = torch.randn(2, 3, tiny_student.config.hidden_size)
    assert torch.allclose(head.logits(hidden), tiny_student.lm_head(hidden), atol=1e-6)


def test_divergence_rejects_bad_beta():
    with pytest.raises(ValueError, match="beta must lie in"):
        generalized_jsd_from_logits(torch.zeros(1, 3), torch.zeros(1, 3), 1.5)


def test_token_mean_loss_divides_by_the_step_tokens_or_the_micro_batch_tokens():
    from trl_distill.core.divergence import token_mean_loss

    total, tokens = torch.tensor(6.0), torch.tensor(4)
    assert token_mean_loss(total, tokens).item() == 1.5  # this micro-batch's 4 tokens
    assert token_mean_loss(total, tokens, 12).item() == 0.5  # the optimizer step's 12 tokens
    assert token_mean_loss(total, tokens, torch.tensor(3)).item() == 2.0
    assert token_mean_loss(total, torch.tensor(0)).item() == 6.0  # no token: no division by zero


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_forward_only_cpu_logprobs_equal_the_chunked_kernel(softcap):
    """The row-chunked CPU path (no grad) gives TRL's kernel's numbers (taken with grad on), and both equal an explicit
    log-softmax, over more rows than one chunk."""
    from trl_distill.core.divergence import LMHead
    from trl_distill.core.logprobs import CPU_ROW_CHUNK, token_logprobs_from_hidden

    torch.manual_seed(0)
    rows, length, width, vocab = 3, CPU_ROW_CHUNK, 8, 50
    hidden = torch.randn(rows, length, width)
    head = LMHead(torch.randn(vocab, width), torch.randn(vocab), logit_scale=0.7, softcap=softcap)
    ids = torch.randint(0, vocab, (rows, length))
    mask = (torch.rand(rows, length) > 0.2).long()
    with torch.no_grad():
        fast = token_logprobs_from_hidden(hidden, head, ids, mask, temperature=0.8)
    kernel = token_logprobs_from_hidden(hidden.requires_grad_(), head, ids, mask, temperature=0.8).detach()
    explicit = torch.log_softmax(head.logits(hidden.detach()[:, :-1]) / 0.8, -1).gather(-1, ids[:, 1:, None])[..., 0]
    expected = torch.cat([torch.zeros(rows, 1), explicit * mask[:, 1:]], dim=1)
    expected[:, 0] = 0
    torch.testing.assert_close(fast, kernel, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
