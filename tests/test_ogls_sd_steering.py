"""OGLS-SD steering directions and rollout token masks, checked against hand-computed numbers and against
explicit-logit steering."""

import math

import pytest
import torch

from trl_distill.core.divergence import LMHead, generalized_jsd, generalized_jsd_from_logits
from trl_distill.ogls_sd.clipped_divergence import vocabulary_clip
from trl_distill.ogls_sd.rollout_masks import distillation_mask, positive_tail_mask, short_correct_rollouts
from trl_distill.ogls_sd.steering import (
    contextual_steering_direction,
    direction_logit_norm,
    group_outcomes,
    normalize_steering_direction,
    steered_teacher,
    steering_direction,
)


def test_pooled_direction_of_a_hand_built_group():
    # one group of 3 rollouts, features in D=2, up to 2 completion tokens
    features = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0]],  # success, mean_t = (2, 3)
            [[5.0, 0.0], [9.0, 9.0]],  # success, one token only -> (5, 0)
            [[0.0, 1.0], [2.0, 1.0]],  # failure, mean_t = (1, 1)
        ]
    )
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    success = torch.tensor([1, 1, 0])
    d = steering_direction(features, mask, success, num_generations=3)
    # mean(success) - mean(failure) = ((2,3)+(5,0))/2 - (1,1) = (2.5, 0.5)
    torch.testing.assert_close(d, torch.tensor([[2.5, 0.5]]))


def test_groups_without_both_outcomes_get_zero_and_unscored_rollouts_are_ignored():
    features = torch.randn(9, 4, 3)
    mask = torch.ones(9, 4)
    success = torch.tensor([1, 1, 1, 0, 0, 0, 1, -1, 0])  # all-success, all-failure, mixed with an unscored rollout
    d = steering_direction(features, mask, success, num_generations=3)
    assert torch.equal(d[0], torch.zeros(3)) and torch.equal(d[1], torch.zeros(3))
    expected = features[6].mean(0) - features[8].mean(0)  # rollout 7 (unscored) takes no side
    torch.testing.assert_close(d[2], expected)
    assert group_outcomes(success, 3)[2].tolist() == [False, False, True]


def test_contextual_direction_of_a_hand_built_group():
    torch.manual_seed(0)
    G, T, D = 3, 2, 4
    success = torch.tensor([1, 0, 0, 1, 1, 1])  # a mixed group, then an all-success group
    # context[j][i] = features of rollout i read with rollout j of its group as the teacher's context
    context = [torch.randn(2 * G, T, D) for _ in range(G)]
    d = contextual_steering_direction(iter(context), success, G)
    for i in range(G):  # mixed group: context 0 succeeded, contexts 1 and 2 failed
        expected = context[0][i] - (context[1][i] + context[2][i]) / 2
        torch.testing.assert_close(d[i], expected)
    assert torch.equal(d[G:], torch.zeros(G, T, D))


def test_alpha_zero_returns_the_teacher_unchanged():
    features = torch.randn(4, 3, 5)
    d = steering_direction(features, torch.ones(4, 3), torch.tensor([1, 0, 1, 0]), 2)
    assert steered_teacher(features, d, 0.0, 2) is features


@pytest.fixture
def head():
    torch.manual_seed(1)
    V, H = 37, 8
    return LMHead(weight=0.3 * torch.randn(V, H), bias=torch.randn(V), logit_scale=0.7)


@pytest.mark.parametrize("mode", ["pooled", "contextual"])
@pytest.mark.parametrize("normalize", [False, True])
def test_hidden_space_steering_equals_explicit_logit_steering(head, mode, normalize):
    torch.manual_seed(2)
    G, N, T, H = 4, 8, 5, head.weight.shape[1]
    hidden = torch.randn(N, T, H)
    mask = (torch.rand(N, T) > 0.2).long()
    mask[:, 0] = 1
    success = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1])  # one mixed group, one without failures
    alpha = 0.8
    if mode == "pooled":
        d_h = steering_direction(hidden, mask, success, G)
        d_z = steering_direction(head.logits(hidden), mask, success, G)
    else:
        contexts_h = [torch.randn(N, T, H) for _ in range(G)]
        d_h = contextual_steering_direction(contexts_h, success, G)
        d_z = contextual_steering_direction([head.logits(c) for c in contexts_h], success, G)
    # the logit norm computed through the Gram matrix equals the norm of the explicit logit direction
    torch.testing.assert_close(direction_logit_norm(d_h, head), direction_logit_norm(d_z), atol=1e-5, rtol=1e-5)
    if normalize:
        d_h = normalize_steering_direction(d_h, G, head, mask)
        d_z = normalize_steering_direction(d_z, G, None, mask)
    via_hidden = head.logits(steered_teacher(hidden, d_h, alpha, G))
    via_logits = steered_teacher(head.logits(hidden), d_z, alpha, G)
    torch.testing.assert_close(via_hidden, via_logits, atol=1e-5, rtol=1e-5)
    # and the chunked divergence on steered hidden states equals the explicit one on steered logits
    student_head = LMHead(weight=0.3 * torch.randn_like(head.weight), bias=torch.randn_like(head.bias))
    student_hidden = torch.randn(N, T, H)
    chunked, _ = generalized_jsd(
        student_hidden, student_head, steered_teacher(hidden, d_h, alpha, G), head, mask, beta=0.5
    )
    explicit = generalized_jsd_from_logits(student_head.logits(student_hidden), via_logits, beta=0.5) * mask
    torch.testing.assert_close(chunked, explicit, atol=1e-5, rtol=1e-5)


def test_normalized_pooled_direction_has_unit_logit_norm(head):
    hidden = torch.randn(4, 3, head.weight.shape[1])
    d = steering_direction(hidden, torch.ones(4, 3), torch.tensor([1, 0, 1, 1]), 2)
    normed = normalize_steering_direction(d, 2, head)
    torch.testing.assert_close(direction_logit_norm(normed, head), torch.tensor([1.0, 0.0]))


def test_incomplete_groups_are_rejected():
    with pytest.raises(ValueError, match="num_generations=3"):
        steering_direction(torch.randn(4, 2, 2), torch.ones(4, 2), torch.tensor([1, 0, 1, 0]), 3)


def right_padded(lengths, width):
    return (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(-1)).long()


def test_distillation_mask_keeps_incorrect_rollouts_and_their_first_tokens():
    mask = right_padded([5, 3, 6, 2], 6)
    success = torch.tensor([1, 0, -1, 0])  # correct, incorrect, unscored, incorrect
    got = distillation_mask(mask, success, "incorrect", max_distill_tokens=4)
    expected = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0],  # correct: no distribution matching
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],  # unscored counts as not verified correct; cut after 4 tokens
            [1, 1, 0, 0, 0, 0],
        ]
    )
    assert torch.equal(got, expected)
    assert torch.equal(distillation_mask(mask, success, "all", None), mask)


def test_short_correct_rollouts_by_the_group_median():
    # group 1: correct lengths 4, 10, 7 (median 7) and one failure; group 2: one correct rollout; group 3: none
    lengths = torch.tensor([4, 10, 7, 2, 9, 3, 3, 3, 5, 6, 7, 8])
    success = torch.tensor([1, 1, 1, 0, 1, 0, 0, -1, 0, 0, 0, 0])
    short = short_correct_rollouts(lengths, success, 4, quantile=0.5)
    assert short.tolist() == [True, False, True, False, True, False, False, False, False, False, False, False]
    # quantile 1.0: every correct rollout; an absolute cap on top
    assert short_correct_rollouts(lengths, success, 4, 1.0).tolist()[:5] == [True, True, True, False, True]
    assert short_correct_rollouts(lengths, success, 4, 1.0, max_tokens=8).tolist()[:5] == [
        True,
        False,
        True,
        False,
        False,
    ]
    # two correct rollouts: the median interpolates between them (4 and 10 -> 7)
    two = short_correct_rollouts(torch.tensor([4, 10, 7, 2]), torch.tensor([1, 1, 0, 0]), 4, 0.5)
    assert two.tolist() == [True, False, False, False]


def test_positive_tail_mask_is_the_last_tokens_of_short_correct_rollouts():
    mask = right_padded([5, 8, 2, 6], 8)
    success = torch.tensor([1, 1, 1, 0])  # correct lengths 5, 8, 2: median 5
    got = positive_tail_mask(mask, success, 4, tail_tokens=3, quantile=0.5)
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 1, 0, 0, 0],  # the last 3 of 5 tokens
            [0, 0, 0, 0, 0, 0, 0, 0],  # longer than the median: not short
            [1, 1, 0, 0, 0, 0, 0, 0],  # shorter than the tail: all of it
            [0, 0, 0, 0, 0, 0, 0, 0],  # incorrect
        ]
    )
    assert torch.equal(got, expected)


def elementwise_jsd_terms(zs, zt, beta):
    """The generalized JSD's per-vocabulary-entry terms in float64, written from the definition."""
    ps, pt = zs.double().softmax(-1), zt.double().softmax(-1)
    if beta == 0.0:
        return pt * (pt / ps).log()
    if beta == 1.0:
        return ps * (ps / pt).log()
    m = beta * pt + (1 - beta) * ps
    return beta * pt * (pt / m).log() + (1 - beta) * ps * (ps / m).log()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_vocabulary_clipped_jsd_clamps_each_entry_before_the_sum(head, beta):
    torch.manual_seed(4)
    zs, zt = 3 * torch.randn(6, 37), 3 * torch.randn(6, 37)
    clip = 0.02
    got = generalized_jsd_from_logits(zs, zt, beta, vocabulary_terms=vocabulary_clip(clip))
    expected = elementwise_jsd_terms(zs, zt, beta).clamp(max=clip).sum(-1)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert (got > clip).any()  # a token's total is not bounded by the clip, unlike the per-token clip
    unclipped = generalized_jsd_from_logits(zs, zt, beta, vocabulary_terms=vocabulary_clip(math.inf))
    torch.testing.assert_close(unclipped, generalized_jsd_from_logits(zs, zt, beta), atol=1e-5, rtol=1e-5)


def test_chunked_vocabulary_clipped_jsd_equals_explicit_values_and_gradients(head):
    torch.manual_seed(5)
    N, T, H = 3, 4, head.weight.shape[1]
    student = LMHead(weight=(0.3 * torch.randn_like(head.weight)).requires_grad_(), bias=torch.randn_like(head.bias))
    h_s = torch.randn(N, T, H, requires_grad=True)
    h_t = torch.randn(N, T, H)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    chunked, entropy = generalized_jsd(h_s, student, h_t, head, mask, 0.5, 1.0, vocabulary_clip(0.01), chunk_tokens=3)
    explicit = (
        generalized_jsd_from_logits(student.logits(h_s), head.logits(h_t), 0.5, vocabulary_terms=vocabulary_clip(0.01))
        * mask
    )
    torch.testing.assert_close(chunked, explicit, atol=1e-6, rtol=1e-5)
    log_p = student.logits(h_s).log_softmax(-1)
    torch.testing.assert_close(entropy, -(log_p.exp() * log_p).sum(-1) * mask, atol=1e-5, rtol=1e-5)
    weights = torch.randn(N, T)
    grads = torch.autograd.grad((chunked * weights).sum(), (h_s, student.weight))
    expected = torch.autograd.grad((explicit * weights).sum(), (h_s, student.weight))
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
