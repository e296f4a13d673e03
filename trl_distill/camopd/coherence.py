"""CaMOPD's gradient diagnostics (docs/methods.md §4).

- `gradient_coherence`: `cos(∇L_recovery, ∇L_review)`, negative = the two phases counteract (*proposed* diagnostic).
- `coherence` and `coherence_gain`: the paper's **gradient coherence gain** as later notes on it report it (medium
  confidence), over per-sample gradients `g_i`:

      Coh(A) = ‖Σ_{i∈A} g_i‖ / Σ_{i∈A} ‖g_i‖          (1 when all agree, near 0 when they cancel)
      GCG    = (Coh(selected) − Coh(full)) / Coh(full)

  how much gap-based selection makes the kept samples' gradients agree, compared with all generated samples.

Per-sample gradients of the whole model would cost one backward pass and one model-sized vector per sample, so the
trainer takes them over a small parameter subset ([`coherence_parameters`]: the trainable parameters of the last
module before the output head — the final norm in full fine-tuning, the last LoRA matrix with PEFT), and
[`per_sample_gradients`] back-propagates the head and the divergence once per batch, then that module once per sample.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


def gradient_coherence(grad_a: torch.Tensor, grad_b: torch.Tensor) -> torch.Tensor:
    """`cos(∇L_a, ∇L_b)` of two flattened gradients; negative means the updates counteract (docs/methods.md §4)."""
    return torch.nn.functional.cosine_similarity(grad_a.float(), grad_b.float(), dim=0, eps=1e-12)


def coherence(grads: torch.Tensor) -> torch.Tensor:
    """`Coh(A) = ‖Σ_{i∈A} g_i‖ / Σ_{i∈A} ‖g_i‖` of per-sample gradients `grads` of shape `(|A|, P)`; 0 if all vanish."""
    grads = grads.float()
    return grads.sum(0).norm() / grads.norm(dim=1).sum().clamp(min=1e-30)


def coherence_gain(grads: torch.Tensor, selected: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """`GCG = (Coh(selected) − Coh(full)) / Coh(full)` (docs/methods.md §4, the paper's diagnostic as reported).

    Args:
        grads (`torch.Tensor`): `(N, P)` per-sample gradients of all generated samples (the full set).
        selected (`Sequence[int]` or `torch.Tensor`): indices of the samples kept by gap-based selection.
    """
    full = coherence(grads)
    kept = coherence(grads[torch.as_tensor(selected, dtype=torch.long, device=grads.device)])
    return (kept - full) / full


def coherence_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameter subset of the per-sample gradients: the trainable parameters of the last module (in
    registration order, which is forward order in `transformers` causal LMs) that has any, the output head excluded.

    That is the final norm (`model.norm.weight`) of a fully fine-tuned causal LM, and the last LoRA matrix of a PEFT
    student. Only the head and that module are back-propagated through, so a per-sample gradient is cheap.
    """
    head = model.get_output_embeddings()
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in head_params]
    if not named:
        raise ValueError("The student has no trainable parameter outside its output head; nothing to diagnose.")
    module = named[-1][0].rsplit(".", 1)[0]
    return [(n, p) for n, p in named if n.rsplit(".", 1)[0] == module]


def coherence_module(model: torch.nn.Module) -> torch.nn.Module:
    """The module that owns [`coherence_parameters`] (whose output [`per_sample_gradients`] splits per sample)."""
    return model.get_submodule(coherence_parameters(model)[0][0].rsplit(".", 1)[0])


@contextmanager
def recorded_outputs(module: torch.nn.Module) -> Iterator[list]:
    """Inside the block, every output `module` produces is appended to the yielded list (a forward hook)."""
    outputs = []
    handle = module.register_forward_hook(lambda _module, _args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def per_sample_gradients(
    losses: torch.Tensor, params: Sequence[torch.Tensor], outputs: Sequence | None = None
) -> torch.Tensor:
    """`(N, P)` flattened gradients of each `losses[i]` with respect to `params`.

    With `outputs` (what `recorded_outputs` recorded of the module that owns `params`) holding one batch-first tensor
    whose row i feeds only `losses[i]`, as in a causal LM: one backward of `Σ_i losses[i]` to that output (its row i
    is then `∂losses[i]/∂output_i`), and one backward per sample through that module alone, so the output head and the
    divergence are back-propagated once instead of `N` times. Otherwise (no outputs, the module ran more than once,
    or under re-entrant checkpointing) one backward per sample through the whole graph. Both are exact.
    """
    output = outputs[0] if outputs is not None and len(outputs) == 1 else None
    through_module = torch.is_tensor(output) and output.requires_grad and output.size(0) == losses.numel()
    if through_module:
        (upstream,) = torch.autograd.grad(losses.sum(), output, retain_graph=True, allow_unused=True)
    rows = []
    for i, loss in enumerate(losses):
        if not through_module:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        elif upstream is None:  # the losses do not depend on the module
            grads = [None] * len(params)
        else:
            grads = torch.autograd.grad(output[i], params, upstream[i], retain_graph=True, allow_unused=True)
        rows.append(_flat(grads, params))
    return torch.stack(rows)


def _flat(grads, params) -> torch.Tensor:
    """One flat float vector of `grads` (zeros for a parameter without one)."""
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).detach().float().flatten() for g, p in zip(grads, params)]
    )
