"""CaMOPD's gap-based sample selection (docs/methods.md §4, *proposed* specifics).

Per generated sample, the teacher–student **gap** is the mean absolute difference of the log-probabilities the two
models give the tokens the student sampled:

    gap = (1/n) Σ_t |log T(y_t | x, y_<t) − log S_θ(y_t | x, y_<t)|

The trainer generates `B/ρ` samples, keeps the `B` with the largest gap (the samples that still need correcting,
against *weak-signal flattening*), and normalises the loss over the kept tokens.
"""

import math

import torch

from ..core.divergence import LMHead
from ..core.logprobs import token_logprobs_from_hidden


AUTO_RHO_SEVERAL_SOURCES = 0.5


def resolve_rho(rho: float | None, num_sources: int) -> float:
    """ρ the trainer uses: `rho` when set; with `rho=None` ("auto"), 1.0 (no gap selection, the loss of
    `trl.DistillationTrainer`) for one prompt source and 0.5 (CaMOPD's gap selection) for several."""
    if rho is not None:
        return rho
    return AUTO_RHO_SEVERAL_SOURCES if num_sources > 1 else 1.0


def pool_size(batch_size: int, rho: float) -> int:
    """Number of samples to generate so that keeping the top-`rho` leaves `batch_size`: `ceil(batch_size / rho)`."""
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must lie in (0, 1] (the kept fraction of generated samples), got {rho}.")
    # round first so that e.g. 6 / 0.3 = 20.000000000000004 gives 20, not 21
    return math.ceil(round(batch_size / rho, 6))


def sampled_token_logprobs(
    hidden: torch.Tensor, head: LMHead, completion_ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """`log p(completion_ids[b, k] | ·)` from hidden states already aligned with the completion tokens.

    Args:
        hidden (`torch.Tensor`): `(B, C, H)`, the hidden state that predicts `completion_ids[:, k]` at position `k`
            (what `DistillationTrainer._get_last_hidden_state` returns).
        head ([`~trl_distill.core.divergence.LMHead`]): the model's output projection.
        completion_ids (`torch.Tensor`): `(B, C)` sampled tokens.
        mask (`torch.Tensor`): `(B, C)`, nonzero on real completion tokens.
        temperature (`float`, defaults to 1.0): softmax temperature.

    Returns:
        `torch.Tensor`: `(B, C)` fp32 log-probabilities, zero outside the mask.
    """
    # `token_logprobs_from_hidden` predicts ids[t] from hidden[t-1]; shift by one dummy column to reuse it.
    hidden = torch.cat([hidden, hidden.new_zeros(hidden.size(0), 1, hidden.size(-1))], dim=1)
    ids = torch.cat([completion_ids.new_zeros(completion_ids.size(0), 1), completion_ids], dim=1)
    mask = torch.cat([mask.new_zeros(mask.size(0), 1), mask], dim=1)
    return token_logprobs_from_hidden(hidden, head, ids, mask, temperature)[:, 1:]


def gap(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample gap `(1/n) Σ_t |log T(y_t) − log S(y_t)|` over the masked-in tokens; `(B,)`, 0 for empty samples."""
    mask = mask.float()
    total = ((teacher_logprobs.float() - student_logprobs.float()).abs() * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0)


def select_by_gap(gaps: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Indices of the `num_keep` samples with the largest gap, in their original order (ties: earlier sample first).

    Args:
        gaps (`torch.Tensor`): `(N,)` per-sample gaps.
        num_keep (`int`): how many to keep, `1 <= num_keep <= N`.

    Returns:
        `torch.Tensor`: sorted `(num_keep,)` long tensor of kept indices.
    """
    if not 1 <= num_keep <= gaps.numel():
        raise ValueError(f"num_keep must lie in [1, {gaps.numel()}] (the number of samples), got {num_keep}.")
    order = torch.sort(-gaps.detach().float().cpu(), stable=True).indices
    return order[:num_keep].sort().values
