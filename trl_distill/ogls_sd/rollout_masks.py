"""Which rollout tokens OGLS-SD trains, and how (v2, arXiv 2605.12400v2; docs/methods.md §3, medium confidence).

Rollouts come in prompt groups of `num_generations` consecutive rows, with outcomes `1` (correct: reward at or above
the success threshold), `0` (incorrect) or `-1` (no reward function scored it). Two disjoint token sets:

- the **distribution-matched** tokens ([`distillation_mask`]): the first `max_distill_tokens` tokens of the rollouts
  that are steered (all of them, or only those not verified correct);
- the **positive-tail** tokens ([`positive_tail_mask`]): the last `positive_tail_tokens` tokens of the *short*
  correct rollouts, trained by NLL (SFT, [`positive_tail_nll`]). "Short" is our rule ([`short_correct_rollouts`]): v2
  does not define it.

Completion masks are right-padded: a rollout's tokens are positions `0..L-1` of its row.
"""

import torch
from trl.kernels import ChunkedLogProbFunction

from ..core.divergence import LMHead
from .steering import check_prompt_groups


# vocabulary tile width of TRL's chunked log-probability kernel (the positive-tail NLL)
_LOGPROB_CHUNK = 4096


def distillation_mask(
    completion_mask: torch.Tensor,
    success: torch.Tensor,
    steer_rollouts: str = "incorrect",
    max_distill_tokens: int | None = None,
) -> torch.Tensor:
    """The tokens distribution-matched to the (steered) teacher, `(N, T)` with the completion mask's dtype.

    Args:
        completion_mask (`torch.Tensor`): `(N, T)`, nonzero on completion tokens (right padding).
        success (`torch.Tensor`): `(N,)` outcomes `1` / `0` / `-1`.
        steer_rollouts (`str`): `"incorrect"` (v2): every rollout except the correct ones (`success == 1`); `"all"`.
        max_distill_tokens (`int` or `None`): only the first this many tokens of each rollout (v2: 1,024).
    """
    if steer_rollouts not in ("incorrect", "all"):
        raise ValueError(f"steer_rollouts must be 'incorrect' or 'all', got {steer_rollouts!r}.")
    mask = completion_mask.clone()
    if steer_rollouts == "incorrect":
        mask = mask * (success != 1).to(mask.dtype).unsqueeze(-1)
    if max_distill_tokens is not None:
        mask[:, max_distill_tokens:] = 0
    return mask


def short_correct_rollouts(
    lengths: torch.Tensor,
    success: torch.Tensor,
    num_generations: int,
    quantile: float = 0.5,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Which rollouts are *short correct* ones, `(N,)` booleans — **our rule** (v2 says "short", not how short).

    A rollout is short correct when it is correct (`success == 1`), its length is at most the `quantile` (linear
    interpolation, `torch.quantile`) of the lengths of the correct rollouts of its group — `0.5` the median, `1.0`
    every correct rollout — and, when `max_tokens` is set, at most `max_tokens`.

    Args:
        lengths (`torch.Tensor`): `(N,)` completion lengths in tokens.
        success (`torch.Tensor`): `(N,)` outcomes `1` / `0` / `-1`.
        num_generations (`int`): rollouts per prompt group (consecutive rows).
        quantile (`float`): in `[0, 1]`.
        max_tokens (`int` or `None`): an absolute length limit on top of the group rule.
    """
    check_prompt_groups(lengths.numel(), num_generations)
    correct = (success == 1).view(-1, num_generations)
    grouped = lengths.float().view(-1, num_generations)
    short = torch.zeros_like(correct)
    for g in range(grouped.size(0)):
        if correct[g].any():
            threshold = torch.quantile(grouped[g][correct[g]], quantile)
            short[g] = correct[g] & (grouped[g] <= threshold)
    short = short.view(-1)
    return short if max_tokens is None else short & (lengths <= max_tokens)


def positive_tail_mask(
    completion_mask: torch.Tensor,
    success: torch.Tensor,
    num_generations: int,
    tail_tokens: int = 128,
    quantile: float = 0.5,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """The positive-tail SFT tokens (v2): the last `tail_tokens` tokens of each short correct rollout, `(N, T)`.

    See [`short_correct_rollouts`] for the rule (ours) that decides which correct rollouts are short (`quantile`,
    `max_tokens`).
    """
    lengths = (completion_mask != 0).sum(-1)
    short = short_correct_rollouts(lengths, success, num_generations, quantile, max_tokens)
    positions = torch.arange(completion_mask.size(1), device=completion_mask.device).unsqueeze(0)
    in_tail = positions >= (lengths - tail_tokens).unsqueeze(-1)
    return completion_mask * (in_tail & short.unsqueeze(-1)).to(completion_mask.dtype)


def positive_tail_nll(hidden: torch.Tensor, head: LMHead, targets: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """The positive-tail SFT term: the student's NLL `−log p_θ(y_t | x, y_<t)` (temperature 1) at the `tail` positions,
    `(B, T)`, zero elsewhere; TRL's chunked log-probability kernel, so no `(B, T, V)` logits."""
    valid = tail.reshape(-1) != 0
    nll = hidden.new_zeros(valid.shape, dtype=torch.float32)
    if valid.any():
        log_p = ChunkedLogProbFunction.apply(
            hidden.reshape(-1, hidden.size(-1))[valid],
            head.weight,
            head.bias,
            targets.reshape(-1)[valid],
            1.0,
            _LOGPROB_CHUNK,
            head.softcap,
            head.logit_scale,
            (),
        )[0]
        nll = nll.masked_scatter(valid, -log_p.float())
    return nll.view(tail.shape)
