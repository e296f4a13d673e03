"""Teacher–student divergences: the generalized JSD of GKD, per token.

`β = 0` is the forward KL(teacher ‖ student), `β = 1` the reverse KL(student ‖ teacher), anything between the
generalized JSD with mixture `m = (1-β)·p_S + β·p_T`:

    JSD_β = β·KL(p_T ‖ m) + (1-β)·KL(p_S ‖ m)

The chunked form reuses TRL's `ChunkedDivergenceFunction`, so `(batch, length, vocab)` logits never exist in full.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

from .parameters import full_shape


@dataclass
class LMHead:
    """A model's output projection and the logit post-processing its config asks for.

    Args:
        weight (`torch.Tensor`): `lm_head` weight of shape `(V, H)`.
        bias (`torch.Tensor` or `None`): `lm_head` bias of shape `(V,)`.
        logit_scale (`float`): multiplier applied to the logits (Cohere/Granite style), 1.0 when absent.
        softcap (`float` or `None`): Gemma-style final-logit softcapping, `softcap·tanh(z/softcap)`.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    logit_scale: float = 1.0
    softcap: float | None = None

    @classmethod
    def of(cls, model) -> "LMHead":
        """Reads the output embeddings and logit post-processing of a (possibly PEFT-wrapped) causal LM."""
        head = model.get_output_embeddings()
        config = model.config.get_text_config()
        scale = getattr(config, "logit_scale", None)
        if scale is None:
            scale = getattr(config, "output_multiplier", None) or getattr(config, "lm_head_multiplier", None)
        if scale is None and getattr(config, "logits_scaling", None) is not None:
            scale = config.logits_scaling if config.model_type == "hyperclovax" else 1 / config.logits_scaling
        return cls(
            weight=head.weight,
            bias=getattr(head, "bias", None),
            logit_scale=1.0 if scale is None else float(scale),
            softcap=getattr(config, "final_logit_softcapping", None),
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Explicit logits `softcap(scale·(W h + b))` in fp32 (for small inputs, tests and the softcap fallback)."""
        z = F.linear(hidden.float(), self.weight.float(), None if self.bias is None else self.bias.float())
        if self.logit_scale != 1.0:  # a full pass over (rows, V): skip it when it changes nothing
            z = z * self.logit_scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z


def _generalized_jsd(log_ps: torch.Tensor, log_pt: torch.Tensor, beta: float, reduce: Callable) -> torch.Tensor:
    """JSD_β of two log-distributions, each KL's per-entry terms passed through `reduce` (the vocabulary sum, or none)."""
    if beta == 0.0:
        return reduce(F.kl_div(log_ps, log_pt, reduction="none", log_target=True))
    if beta == 1.0:
        return reduce(F.kl_div(log_pt, log_ps, reduction="none", log_target=True))
    log_m = torch.logaddexp(log_ps + math.log(1 - beta), log_pt + math.log(beta))
    kl_t = reduce(F.kl_div(log_m, log_pt, reduction="none", log_target=True))
    kl_s = reduce(F.kl_div(log_m, log_ps, reduction="none", log_target=True))
    return beta * kl_t + (1 - beta) * kl_s


def generalized_jsd_from_logits(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    vocabulary_terms: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-position generalized JSD from explicit logits of shape `(..., V)`; returns shape `(...)`.

    Args:
        student_logits (`torch.Tensor`): student logits; gradients flow through them.
        teacher_logits (`torch.Tensor`): teacher logits (treated as constants by the caller's `no_grad`).
        beta (`float`): 0 = forward KL(T‖S), 1 = reverse KL(S‖T), else JSD with mixture `(1-β)·p_S + β·p_T`.
        temperature (`float`, defaults to 1.0): softmax temperature applied to both.
        vocabulary_terms (`Callable`, *optional*): applied to the `(..., V)` terms of the vocabulary entries before
            they are summed, e.g. OGLS-SD's per-entry clip ([`~trl_distill.ogls_sd.clipped_divergence.vocabulary_clip`]).
    """
    _check_beta(beta)
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if vocabulary_terms is None:  # each KL summed over the vocabulary, then mixed
        return _generalized_jsd(log_ps, log_pt, beta, lambda terms: terms.sum(-1))
    return vocabulary_terms(_generalized_jsd(log_ps, log_pt, beta, lambda terms: terms)).sum(-1)


def generalized_jsd(
    student_hidden: torch.Tensor,
    student_head: LMHead,
    teacher_hidden: torch.Tensor,
    teacher_head: LMHead,
    mask: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    vocabulary_terms: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk_tokens: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token generalized JSD and student entropy from final hidden states, chunked over tokens and vocabulary.

    Only masked-in positions are projected. Gradients flow to the student's hidden states and head.

    Args:
        student_hidden (`torch.Tensor`): student final hidden states `(B, T, H_s)`, aligned with the predicted tokens.
        student_head (`LMHead`): the student's output projection.
        teacher_hidden (`torch.Tensor`): teacher final hidden states `(B, T, H_t)`, aligned the same way.
        teacher_head (`LMHead`): the teacher's output projection (same vocabulary).
        mask (`torch.Tensor`): `(B, T)`, nonzero where the divergence is wanted (completion tokens).
        beta (`float`): see [`generalized_jsd_from_logits`].
        temperature (`float`, defaults to 1.0): softmax temperature.
        vocabulary_terms (`Callable`, *optional*): see [`generalized_jsd_from_logits`]. TRL's chunked kernel sums over
            the vocabulary inside, so with it the divergence is computed from explicit logits, `chunk_tokens`
            positions at a time under activation checkpointing: at most a `(chunk_tokens, V)` block of logits lives at
            once, in the forward and the backward (slower than the kernel).
        chunk_tokens (`int`, defaults to 256): positions per chunk of that explicit path.

    Returns:
        `(divergence, entropy)`, each `(B, T)` with zeros outside the mask.
    """
    _check_beta(beta)
    rows_s, rows_t = _vocab_rows(student_head.weight), _vocab_rows(teacher_head.weight)
    if rows_s != rows_t:
        raise ValueError(
            f"Student and teacher heads have different vocabularies ({rows_s} vs {rows_t} rows); "
            "on-policy distillation needs a shared tokenizer."
        )
    if vocabulary_terms is not None:
        options = (student_head, teacher_head, beta, temperature, vocabulary_terms)
        return masked_token_chunks(_explicit_jsd, mask, (student_hidden, teacher_hidden), chunk_tokens, *options)
    return _kernel_jsd(student_hidden, teacher_hidden, mask, (student_head, teacher_head), beta, temperature)


def _kernel_jsd(student_hidden, teacher_hidden, mask, heads: tuple[LMHead, LMHead], beta: float, temperature: float):
    """[`generalized_jsd`] through TRL's `ChunkedDivergenceFunction` (chunked over tokens and vocabulary)."""
    student_head, teacher_head = heads
    valid = mask.reshape(-1) != 0
    h_s = student_hidden.reshape(-1, student_hidden.size(-1))[valid]
    h_t = teacher_hidden.reshape(-1, teacher_hidden.size(-1))[valid]
    divergence = student_hidden.new_zeros(valid.shape, dtype=torch.float32)
    entropy = divergence.clone()
    if h_s.shape[0] > 0:
        div, ent = ChunkedDivergenceFunction.apply(
            h_s,
            student_head.weight,
            student_head.bias,
            h_t,
            teacher_head.weight,
            teacher_head.bias,
            float(beta),
            float(temperature),
            student_head.logit_scale,
            student_head.softcap,
            teacher_head.logit_scale,
            teacher_head.softcap,
        )
        divergence = divergence.masked_scatter(valid, div)
        entropy = entropy.masked_scatter(valid, ent.detach())
    return divergence.view(mask.shape), entropy.view(mask.shape)


def _explicit_jsd(h_s, h_t, student_head: LMHead, teacher_head: LMHead, beta, temperature, vocabulary_terms):
    """[`generalized_jsd`] and the student entropy of one chunk of positions, from explicit logits."""
    z_s, z_t = student_head.logits(h_s), teacher_head.logits(h_t)
    with torch.no_grad():  # the student's entropy, for logging
        log_p = F.log_softmax(z_s / temperature, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
    return generalized_jsd_from_logits(z_s, z_t, beta, temperature, vocabulary_terms), entropy


def checkpointed_chunks(function: Callable, rows: tuple[torch.Tensor, ...], chunk_size: int, *constants) -> list:
    """`function(*row_chunks, *constants)` on `chunk_size` rows of `rows` at a time, each call under activation
    checkpointing (recomputed in the backward pass), so only one chunk's intermediates, e.g. its `(chunk_size, V)`
    logits, live at once. Returns the list of the calls' outputs."""
    return [
        torch.utils.checkpoint.checkpoint(
            function, *(r[start : start + chunk_size] for r in rows), *constants, use_reentrant=False
        )
        for start in range(0, len(rows[0]), chunk_size)
    ]


def masked_token_chunks(
    function: Callable, mask: torch.Tensor, tensors: tuple[torch.Tensor, ...], chunk_size: int, *constants
) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-token `(divergence, entropy)` computed only where `mask` is nonzero, in [`checkpointed_chunks`].

    `function(*chunks, *constants)` gets the masked-in rows of each `(B, T, ...)` tensor of `tensors` (moved to the
    first one's device) and returns two `(rows,)` tensors; they come back as `(B, T)` fp32 with zeros outside the
    mask, the entropy detached.
    """
    valid = mask.reshape(-1) != 0
    device = tensors[0].device
    rows = tuple(t.reshape(-1, t.size(-1))[valid.to(t.device)].to(device) for t in tensors)
    divergence = tensors[0].new_zeros(valid.shape, dtype=torch.float32)
    entropy = divergence.clone()
    if rows[0].size(0):
        parts = checkpointed_chunks(function, rows, chunk_size, *constants)
        divergence = divergence.masked_scatter(valid, torch.cat([d for d, _ in parts]))
        entropy = entropy.masked_scatter(valid, torch.cat([e for _, e in parts]).detach())
    return divergence.view(mask.shape), entropy.view(mask.shape)


def _vocab_rows(weight: torch.Tensor) -> int:
    return full_shape(weight)[0]


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}.")


def token_mean_loss(total: torch.Tensor, num_tokens: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """The on-policy distillation loss of one micro-batch, as both on-policy trainers reduce it: the summed per-token
    terms `total` divided by the loss tokens of the whole optimizer step (`num_items_in_batch`, counted by the Trainer
    across gradient accumulation and processes) or, when that is not given, by this micro-batch's `num_tokens`."""
    if num_items_in_batch is None:
        return total / num_tokens.clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def compute_distillation_loss(
    trainer, model, inputs: dict, num_items_in_batch, loss_terms
) -> tuple[torch.Tensor, dict]:
    """`DistillationTrainer.compute_loss` for a trainer whose loss also returns statistics, so they are handed back
    rather than left on the trainer for the next hook to read.

    The same steps as TRL's: the loss tokens counted over the generated completions (`inputs["num_items_in_batch"]`,
    per process), the loss run through the DDP/FSDP wrapper (`_forward_redirection`), and the mean student entropy
    logged as `entropy` in the trainer's `_metrics`, after the wrapped forward (no collective inside it).

    Args:
        trainer (`DistillationTrainer`): the trainer computing the loss.
        model: the (wrapped) student, as `compute_loss` receives it.
        inputs (`dict`): the micro-batch.
        num_items_in_batch: the Trainer's loss-token count, replaced by the generated one in training.
        loss_terms (`Callable`): `(unwrapped_student, inputs, num_items_in_batch) -> (loss, entropy_sum,
            num_valid_tokens, stats)`, `stats` a `dict` of tensors for the caller to log.

    Returns:
        `tuple[torch.Tensor, dict]`: the loss and `stats`.
    """
    if trainer.model.training and inputs.get("num_items_in_batch") is not None:
        num_items_in_batch = inputs["num_items_in_batch"].clamp(min=1.0) / trainer.accelerator.num_processes
    unwrapped = trainer.accelerator.unwrap_model(model)
    loss, entropy_sum, num_valid, stats = trainer._forward_redirection(
        model, unwrapped, loss_terms, unwrapped, inputs, num_items_in_batch
    )
    mode = "train" if trainer.model.training else "eval"
    num_valid = trainer.accelerator.gather_for_metrics(num_valid).sum()
    entropy_sum = trainer.accelerator.gather_for_metrics(entropy_sum).sum()
    trainer._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
    return loss, stats


# a finite stand-in for log 0 on the sparse support: exp() of it is 0, and 0·(log 0 − x) stays 0 instead of NaN
LOG_ZERO = -1e4
# the tail bucket's mass is at least this, so its log stays finite when the top-k covers (almost) all of the mass
MIN_TAIL_LOG_SUM = -1e-7


def with_tail_bucket(logprobs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`(..., K)` log-probabilities of a top-k support → `(..., K+1)`: invalid entries set to log 0, and one tail
    element `log(1 − Σ_k p_k)` holding the mass outside the support (clamped at `MIN_TAIL_LOG_SUM`)."""
    logprobs = torch.where(valid, logprobs, torch.full_like(logprobs, LOG_ZERO))
    log_sum = torch.logsumexp(logprobs, dim=-1, keepdim=True).clamp(max=MIN_TAIL_LOG_SUM)
    return torch.cat([logprobs, torch.log(-torch.expm1(log_sum))], dim=-1)


def topk_tail_jsd(
    student_topk_logprobs: torch.Tensor, teacher_topk_logprobs: torch.Tensor, beta: float
) -> torch.Tensor:
    """Generalized JSD_β over the teacher's top-k support plus one tail bucket, per position.

    Both arguments are *normalised* log-probabilities (over the whole vocabulary) of the same `K` token ids, `(..., K)`;
    a teacher entry of `-inf` marks a missing one. Each side becomes a distribution over `K + 1` outcomes (the `K`
    tokens, and "any other token" with mass `1 − Σ_k p_k`), and the divergence is taken between those. Exact (equal
    to the full-vocabulary divergence) when the `K` ids cover the vocabulary; otherwise it treats the tail as one token,
    which lowers it: by the data-processing inequality, never above the full divergence.

    Returns:
        `torch.Tensor`: shape `(...)`.
    """
    valid = torch.isfinite(teacher_topk_logprobs)
    student = with_tail_bucket(student_topk_logprobs.float(), valid)
    teacher = with_tail_bucket(teacher_topk_logprobs.float(), valid)
    return generalized_jsd_from_logits(student, teacher, beta)


def topk_tail_generalized_jsd(
    student_hidden: torch.Tensor,
    student_head: LMHead,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    chunk_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`generalized_jsd`]'s counterpart for a teacher known only by its top-k (a served teacher): per-token
    [`topk_tail_jsd`] and student entropy, from the student's hidden states.

    The student's full softmax (for its normaliser and the tail) is taken `chunk_size` tokens at a time under
    activation checkpointing, so `(tokens, V)` logits never exist in full, in the forward or the backward.

    Args:
        student_hidden (`torch.Tensor`): `(B, T, H)` student final hidden states aligned with the predicted tokens.
        student_head (`LMHead`): the student's output projection.
        teacher_topk_ids (`torch.Tensor`): `(B, T, K)` the teacher's top-k token ids.
        teacher_topk_logprobs (`torch.Tensor`): `(B, T, K)` their teacher log-probabilities (already at
            `temperature`); `-inf` where missing.
        mask (`torch.Tensor`): `(B, T)`, nonzero where the divergence is wanted.
        beta (`float`): see [`generalized_jsd_from_logits`].
        temperature (`float`, defaults to 1.0): the student's softmax temperature.
        chunk_size (`int`, defaults to 512): tokens per checkpointed chunk.

    Returns:
        `(divergence, entropy)`, each `(B, T)` with zeros outside the mask.
    """
    _check_beta(beta)
    ids = teacher_topk_ids[mask.to(teacher_topk_ids.device) != 0]
    rows = _vocab_rows(student_head.weight)
    if ids.numel() and int(ids.max()) >= rows:
        raise ValueError(
            f"The served teacher returned token id {int(ids.max())}, past the student's vocabulary ({rows} rows): the "
            "teacher uses another tokenizer."
        )
    tensors = (student_hidden, teacher_topk_ids, teacher_topk_logprobs)
    return masked_token_chunks(_topk_tail_chunk, mask, tensors, chunk_size, student_head, beta, temperature)


def _topk_tail_chunk(hidden, ids, teacher, student_head: LMHead, beta: float, temperature: float):
    """[`topk_tail_jsd`] and the student entropy of one chunk of positions."""
    log_p = F.log_softmax(student_head.logits(hidden) / temperature, dim=-1)
    divergence = topk_tail_jsd(log_p.gather(-1, ids), teacher, beta)
    return divergence, -(log_p.exp() * log_p).sum(-1)
