"""The generalized JSD with each vocabulary entry's term clamped, as OPSD's released code clips it.

OPSD's code (after 2026-03-18; read from third-party copies, medium confidence) computes the generalized JSD of GKD
element-wise over the vocabulary and clamps every element at `jsd_token_clip` (0.05) *before* summing over the
vocabulary:

    D_t = Σ_v min(c, β·p_T,v·log(p_T,v/m_v) + (1−β)·p_S,v·log(p_S,v/m_v)),   m = β·p_T + (1−β)·p_S

(`β = 0`: the element-wise forward KL `p_T,v·log(p_T,v/p_S,v)`; `β = 1`: the reverse KL's). A token's total is then
not bounded by `c`; the per-token clip of the trainer (`jsd_clip_scope="token"`, `min(c, D_t)`) is. TRL's chunked
kernel sums over the vocabulary inside, so this form is computed here in token chunks of explicit logits under
activation checkpointing: memory `O(chunk × V)`, never `(B, T, V)`.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..core.divergence import LMHead


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}.")


def vocabulary_clipped_jsd_from_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, clip: float, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position generalized JSD with every vocabulary entry's term clamped at `clip`, from `(..., V)` logits."""
    _check_beta(beta)
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0.0:
        terms = log_pt.exp() * (log_pt - log_ps)
    elif beta == 1.0:
        terms = log_ps.exp() * (log_ps - log_pt)
    else:
        log_m = torch.logaddexp(log_ps + math.log(1 - beta), log_pt + math.log(beta))
        terms = beta * log_pt.exp() * (log_pt - log_m) + (1 - beta) * log_ps.exp() * (log_ps - log_m)
    return terms.clamp(max=clip).sum(-1)


def _chunk(h_s, w_s, b_s, h_t, w_t, b_t, heads, beta, clip, temperature):
    student_head, teacher_head = heads
    z_s = LMHead(w_s, b_s, student_head.logit_scale, student_head.softcap).logits(h_s)
    z_t = LMHead(w_t, b_t, teacher_head.logit_scale, teacher_head.softcap).logits(h_t)
    with torch.no_grad():  # the student's entropy, for logging
        log_p = F.log_softmax(z_s / temperature, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
    return vocabulary_clipped_jsd_from_logits(z_s, z_t, beta, clip, temperature), entropy


def vocabulary_clipped_jsd(
    student_hidden: torch.Tensor,
    student_head: LMHead,
    teacher_hidden: torch.Tensor,
    teacher_head: LMHead,
    mask: torch.Tensor,
    beta: float,
    clip: float,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`vocabulary_clipped_jsd_from_logits`] and the student entropy from final hidden states, each `(B, T)` with
    zeros outside `mask`.

    Only masked-in positions are projected, `chunk_tokens` at a time, each chunk recomputed in the backward pass, so at
    most a `(chunk_tokens, V)` block of logits lives at once. Gradients flow to the student's hidden states and head.
    """
    valid = mask.reshape(-1) != 0
    h_s = student_hidden.reshape(-1, student_hidden.size(-1))[valid]
    h_t = teacher_hidden.reshape(-1, teacher_hidden.size(-1))[valid]
    out = student_hidden.new_zeros(valid.shape, dtype=torch.float32)
    if h_s.shape[0] == 0:
        return out.view(mask.shape), out.view(mask.shape).clone()
    heads = (student_head, teacher_head)
    parts = [
        checkpoint(
            _chunk,
            h_s[start : start + chunk_tokens],
            student_head.weight,
            student_head.bias,
            h_t[start : start + chunk_tokens],
            teacher_head.weight,
            teacher_head.bias,
            heads,
            beta,
            clip,
            temperature,
            use_reentrant=False,
        )
        for start in range(0, h_s.shape[0], chunk_tokens)
    ]
    divergence = out.masked_scatter(valid, torch.cat([d for d, _ in parts]))
    entropy = out.detach().masked_scatter(valid, torch.cat([e for _, e in parts]))
    return divergence.view(mask.shape), entropy.view(mask.shape)
