"""Teacher–student divergences: the generalized JSD of GKD, per token.

`β = 0` is the forward KL(teacher ‖ student), `β = 1` the reverse KL(student ‖ teacher), anything between the
generalized JSD with mixture `m = (1-β)·p_S + β·p_T`:

    JSD_β = β·KL(p_T ‖ m) + (1-β)·KL(p_S ‖ m)

The chunked form reuses TRL's `ChunkedDivergenceFunction`, so `(batch, length, vocab)` logits never exist in full.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl.kernels.chunked_divergence import ChunkedDivergenceFunction


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


def generalized_jsd_from_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position generalized JSD from explicit logits of shape `(..., V)`; returns shape `(...)`.

    Args:
        student_logits (`torch.Tensor`): student logits; gradients flow through them.
        teacher_logits (`torch.Tensor`): teacher logits (treated as constants by the caller's `no_grad`).
        beta (`float`): 0 = forward KL(T‖S), 1 = reverse KL(S‖T), else JSD with mixture `(1-β)·p_S + β·p_T`.
        temperature (`float`, defaults to 1.0): softmax temperature applied to both.
    """
    _check_beta(beta)
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0.0:
        return F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(-1)
    if beta == 1.0:
        return F.kl_div(log_pt, log_ps, reduction="none", log_target=True).sum(-1)
    log_m = torch.logaddexp(log_ps + math.log(1 - beta), log_pt + math.log(beta))
    kl_t = F.kl_div(log_m, log_pt, reduction="none", log_target=True).sum(-1)
    kl_s = F.kl_div(log_m, log_ps, reduction="none", log_target=True).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


def generalized_jsd(
    student_hidden: torch.Tensor,
    student_head: LMHead,
    teacher_hidden: torch.Tensor,
    teacher_head: LMHead,
    mask: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
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


def _vocab_rows(weight: torch.Tensor) -> int:
    # A ZeRO-3 partitioned parameter is empty outside a gather; `ds_shape` keeps its real shape.
    return getattr(weight, "ds_shape", weight.shape)[0]


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
