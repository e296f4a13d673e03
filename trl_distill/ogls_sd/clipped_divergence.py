"""The clipped divergence of OGLS-SD: the generalized JSD of GKD with a clip, per token or per vocabulary entry.

The divergence itself is [`~trl_distill.core.divergence.generalized_jsd`]; what is OGLS-SD's own is the clip
(`jsd_token_clip`, v2's "clipped forward KL"), in one of two scopes (`jsd_clip_scope`):

- `"token"` ([`token_clip`]): each token's total, `min(c, D_t)`; it bounds every token's term and keeps TRL's chunked
  kernel.
- `"vocabulary"` ([`vocabulary_clip`]), as OPSD's released code (after 2026-03-18; read from third-party copies, medium
  confidence) clips at `c = 0.05`: every vocabulary entry's term is clamped *before* the sum over the vocabulary,

      D_t = Σ_v min(c, β·p_T,v·log(p_T,v/m_v) + (1−β)·p_S,v·log(p_S,v/m_v)),   m = β·p_T + (1−β)·p_S

  (`β = 0`: the element-wise forward KL `p_T,v·log(p_T,v/p_S,v)`; `β = 1`: the reverse KL's). A token's total is then
  not bounded by `c`. TRL's chunked kernel sums over the vocabulary inside, so `generalized_jsd` computes this form in
  token chunks of explicit logits under activation checkpointing: memory `O(chunk × V)`, never `(B, T, V)`.
"""

from collections.abc import Callable
from functools import partial

import torch


def vocabulary_clip(clip: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """OPSD's clip, as `vocabulary_terms` of [`~trl_distill.core.divergence.generalized_jsd`]: each vocabulary entry's
    term of the divergence at most `clip`."""
    return partial(torch.clamp, max=clip)


def token_clip(per_token: torch.Tensor, mask: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token clip `min(c, D_t)`: above `clip` a token's term is constant (no gradient).

    Returns:
        `(clipped, n_clipped)`: the clipped `(B, T)` divergences and how many tokens of `mask` were above `clip`.
    """
    n_clipped = ((per_token > clip) & (mask != 0)).sum()
    return per_token.clamp(max=clip), n_clipped
