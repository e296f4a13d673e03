"""Outcome-guided logit steering (OGLS-SD, arXiv 2605.12400): the steering direction and the steered teacher.

Rollouts come in prompt groups of `num_generations` consecutive rows. Within a group, `G+` are the rollouts whose
reward reached the success threshold and `G-` the others. The functions here are linear in the teacher features,
so they apply unchanged to final hidden states `h` (the fast path) or to explicit logits `z = s·(W h + b)`: a mean
difference of logits is `s·W` times the mean difference of hidden states, the bias cancelling. That is what lets the
trainer steer on hidden states and keep the chunked divergence.

The contextual direction is the one the v2 paper describes (arXiv 2605.12400v2, read from third-party notes on its
source: medium confidence) and the default; the pooled direction is our proposal (docs/methods.md §3), kept as an option.
Either is added to the *anchor*: the teacher shown the prompt alone (v2) or shown the privileged context (our v1
reading).
"""

from collections.abc import Iterable

import torch

from ..core.divergence import LMHead


def rollout_outcomes(rewards: torch.Tensor, correct_threshold: float) -> torch.Tensor:
    """Each rollout's outcome, `(N,)`: `1` (in `G+`: its reward reached `correct_threshold`), `0` (in `G−`), or `-1`
    where the reward is `NaN` (no reward function scored it)."""
    return torch.where(torch.isnan(rewards), -1, (rewards >= correct_threshold).long())


def check_prompt_groups(num_rollouts: int, num_generations: int) -> None:
    """Raises unless the rollouts come in whole prompt groups of `num_generations`."""
    if num_rollouts % num_generations != 0:
        raise ValueError(
            f"Got {num_rollouts} rollouts, not a multiple of num_generations={num_generations}; rollouts must come "
            "in complete prompt groups."
        )


def group_outcomes(success: torch.Tensor, num_generations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group counts of successes and failures, and whether the group has both.

    Args:
        success (`torch.Tensor`): `(N,)` booleans (or `-1`/`0`/`1`, see below), `N` a multiple of `num_generations`.
            A value of `-1` marks an unscored rollout (every reward was `None`): it is in neither `G+` nor `G-`.
        num_generations (`int`): rollouts per prompt group.

    Returns:
        `(num_success, num_failure, mixed)`, each of shape `(N // num_generations,)`.
    """
    check_prompt_groups(success.numel(), num_generations)
    outcome = success.long().view(-1, num_generations)
    num_success = (outcome == 1).sum(-1)
    num_failure = (outcome == 0).sum(-1)
    return num_success, num_failure, (num_success > 0) & (num_failure > 0)


def steering_direction(
    features: torch.Tensor, mask: torch.Tensor, success: torch.Tensor, num_generations: int
) -> torch.Tensor:
    """Pooled steering direction, one vector per prompt group (OGLS-SD option; *proposed* formulation, ours).

    `d = mean_{y∈G+} mean_t f(·|a,y_<t) − mean_{y∈G−} mean_t f(·|a,y_<t)`, where `f` are the anchor teacher's logits
    or final hidden states at the completion positions and `a` its context (`x, c*` for the privileged anchor, `x`
    alone for the unprivileged one). A group without both a success and a failure gets `d = 0`.

    Args:
        features (`torch.Tensor`): `(N, T, D)` anchor-teacher features aligned with the completion tokens.
        mask (`torch.Tensor`): `(N, T)`, nonzero on completion tokens.
        success (`torch.Tensor`): `(N,)` outcomes, see [`group_outcomes`].
        num_generations (`int`): rollouts per prompt group (consecutive rows).

    Returns:
        `torch.Tensor` of shape `(N // num_generations, D)` in fp32.
    """
    num_success, num_failure, mixed = group_outcomes(success, num_generations)
    mask = mask.float()
    # mean_t f for each rollout (an empty completion contributes a zero vector)
    per_rollout = (features.float() * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    per_rollout = per_rollout.view(-1, num_generations, per_rollout.size(-1))
    outcome = success.long().view(-1, num_generations, 1)
    mean_success = (per_rollout * (outcome == 1)).sum(1) / num_success.clamp(min=1).unsqueeze(-1)
    mean_failure = (per_rollout * (outcome == 0)).sum(1) / num_failure.clamp(min=1).unsqueeze(-1)
    return (mean_success - mean_failure) * mixed.unsqueeze(-1)


def contextual_steering_direction(
    context_features: Iterable[torch.Tensor], success: torch.Tensor, num_generations: int
) -> torch.Tensor:
    """Contextual steering direction, one vector per rollout and token (OGLS-SD default: the v2 form).

    `d_t = mean_{y+∈G+} f(·|x,y+,y_<t) − mean_{y−∈G−} f(·|x,y−,y_<t)`: the teacher reads the rollout `y` being trained
    while a successful (failed) rollout of the same group stands in its context. Groups without both outcomes get 0.

    The features arrive one context slot at a time, so only two `(N, T, D)` sums are ever held.

    Args:
        context_features (`Iterable[torch.Tensor]`): `num_generations` tensors of shape `(N, T, D)`; the `j`-th holds,
            for every rollout `i`, the teacher features at `i`'s completion positions with rollout `j` of `i`'s group
            as context. Positions outside the completion are ignored by the caller's mask.
        success (`torch.Tensor`): `(N,)` outcomes, see [`group_outcomes`].
        num_generations (`int`): rollouts per prompt group.

    Returns:
        `torch.Tensor` of shape `(N, T, D)` in fp32.
    """
    num_success, num_failure, mixed = group_outcomes(success, num_generations)
    outcome = success.long().view(-1, num_generations)
    sum_success = sum_failure = None
    seen = 0
    for j, features in enumerate(context_features):
        if j >= num_generations:
            raise ValueError(f"Got more than num_generations={num_generations} context slots.")
        # the outcome of context j, broadcast to every rollout of its group
        context_outcome = outcome[:, j].repeat_interleave(num_generations).view(-1, 1, 1)
        features = features.float()
        add_success = features * (context_outcome == 1)
        add_failure = features * (context_outcome == 0)
        sum_success = add_success if sum_success is None else sum_success + add_success
        sum_failure = add_failure if sum_failure is None else sum_failure + add_failure
        seen += 1
    if seen != num_generations:
        raise ValueError(f"Expected {num_generations} context slots, got {seen}.")
    per_row = num_generations
    n_pos = num_success.clamp(min=1).repeat_interleave(per_row).view(-1, 1, 1)
    n_neg = num_failure.clamp(min=1).repeat_interleave(per_row).view(-1, 1, 1)
    keep = mixed.repeat_interleave(per_row).view(-1, 1, 1)
    return (sum_success / n_pos - sum_failure / n_neg) * keep


def direction_logit_norm(direction: torch.Tensor, head: LMHead | None = None) -> torch.Tensor:
    """Euclidean norm of a steering direction in logit space, over its last dimension.

    A hidden-space direction `d_h` moves the logits by `s·W d_h`, whose norm is `s·sqrt(d_hᵀ WᵀW d_h)`: computed
    through the `(H, H)` Gram matrix, so no vocabulary-sized vector is built per token. With `head=None` the direction
    is taken to be in logit space already.
    """
    direction = direction.float()
    if head is None:
        return direction.norm(dim=-1)
    weight = head.weight.float()
    gram = weight.T @ weight
    squared = ((direction @ gram) * direction).sum(-1).clamp(min=0)
    return abs(head.logit_scale) * squared.sqrt()


def group_direction_norm(
    direction: torch.Tensor, num_generations: int, head: LMHead | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One logit-space norm per prompt group, `(groups,)`: a pooled direction's `(groups, D)` norm, or for a
    contextual direction `(N, T, D)` the root-mean-square norm over the group's tokens in `mask` (`(N, T)`)."""
    norms = direction_logit_norm(direction, head)
    if direction.dim() == 2:
        return norms
    if mask is None:
        raise ValueError("The norm of a contextual (per-token) direction needs the completion mask.")
    mask = mask.float()
    squared = (norms.square() * mask).view(-1, num_generations * mask.size(1)).sum(-1)
    count = mask.view(-1, num_generations * mask.size(1)).sum(-1).clamp(min=1)
    return (squared / count).sqrt()


def normalize_steering_direction(
    direction: torch.Tensor,
    num_generations: int,
    head: LMHead | None = None,
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Per-prompt normalisation: rescales each group's direction to unit norm in logit space.

    Pooled directions `(groups, D)` are divided by their logit-space norm. Contextual directions `(N, T, D)` are
    divided by one scalar per group, the root-mean-square logit-space norm over the group's completion tokens
    (`mask`, `(N, T)`; the trainer passes the distribution-matched tokens). Zero directions stay zero, so groups
    without both outcomes keep the unsteered anchor. See [`group_direction_norm`].
    """
    if direction.dim() == 3 and mask is None:
        raise ValueError("Normalising a contextual (per-token) direction needs the completion mask.")
    norms = group_direction_norm(direction, num_generations, head, mask).clamp(min=eps)
    if direction.dim() == 2:
        return direction / norms.unsqueeze(-1)
    return direction / norms.repeat_interleave(num_generations).view(-1, 1, 1)


def steered_teacher(
    teacher_features: torch.Tensor, direction: torch.Tensor, alpha: float, num_generations: int
) -> torch.Tensor:
    """The steered teacher `f̃ = f_anchor + α·d` (logits, or hidden states for a linear head), in the features' dtype.

    Args:
        teacher_features (`torch.Tensor`): `(N, T, D)` anchor-teacher features (privileged or unprivileged).
        direction (`torch.Tensor`): pooled `(N // num_generations, D)` or contextual `(N, T, D)`.
        alpha (`float`): steering strength; `0` returns `teacher_features` unchanged (with the privileged anchor on
            every rollout: exactly OPSD).
        num_generations (`int`): rollouts per prompt group.
    """
    if alpha == 0:
        return teacher_features
    if direction.dim() == 2:
        direction = direction.repeat_interleave(num_generations, dim=0).unsqueeze(1)
    return (teacher_features.float() + alpha * direction).to(teacher_features.dtype)
