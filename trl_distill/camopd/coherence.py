"""CaMOPD's gradient diagnostics (docs/methods.md §4).

- `gradient_coherence` / `streamed_gradient_coherence`: `cos(∇L_recovery, ∇L_review)`, negative = the two phases
  counteract (*proposed* diagnostic); of two flat vectors / of two losses, streamed over the parameters.
- `coherence` and `coherence_gain`: the paper's **gradient coherence gain** as later notes on it report it (medium
  confidence), over per-sample gradients `g_i`:

      Coh(A) = ‖Σ_{i∈A} g_i‖ / Σ_{i∈A} ‖g_i‖          (1 when all agree, near 0 when they cancel)
      GCG    = (Coh(selected) − Coh(full)) / Coh(full)

  how much gap-based selection makes the kept samples' gradients agree, compared with all generated samples.

Per-sample gradients of the whole model would cost one backward pass and one model-sized vector per sample, so the
trainer takes them over a small parameter subset ([`coherence_parameters`]: the trainable parameters of the last
module before the output head — the final norm in full fine-tuning, the last LoRA matrix with PEFT), and
[`per_sample_gradients`] back-propagates the head and the divergence once per batch, then that module once per sample
([`selection_coherence`] puts the two together over the generation batch).

The recovery/review cosine is over all trainable parameters, so [`streamed_gradient_coherence`] never flattens a
gradient: it keeps the first loss's gradient as autograd returns it and takes the second one parameter at a time, as
the backward pass produces it, adding to a running dot product and the two squared norms.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch


def gradient_coherence(grad_a: torch.Tensor, grad_b: torch.Tensor) -> torch.Tensor:
    """`cos(∇L_a, ∇L_b)` of two flattened gradients; negative means the updates counteract (docs/methods.md §4)."""
    return cosine_from_sums(torch.stack([_dot(grad_a, grad_b), _dot(grad_a, grad_a), _dot(grad_b, grad_b)]))


def cosine_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """`⟨a, b⟩ / (‖a‖ ‖b‖)` from `sums = [⟨a, b⟩, ‖a‖², ‖b‖²]` (0 when either vector vanishes)."""
    dot, norm_a, norm_b = sums.unbind()
    return dot / (norm_a * norm_b).sqrt().clamp(min=1e-12)


def streamed_gradient_coherence(
    loss_a: Callable[[], torch.Tensor],
    loss_b: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    sharded: bool = False,
    group=None,
) -> torch.Tensor:
    """`cos(∇L_a, ∇L_b)` over `params` without a flattened copy of either gradient (docs/methods.md §4).

    `loss_a()` is built and differentiated first (its graph freed before `loss_b()` is built); its gradient is kept
    as autograd returns it, one tensor per parameter. `∇L_b` is never held whole: a hook on each parameter receives
    that parameter's gradient as the backward pass produces it, adds `⟨∇_p L_a, ∇_p L_b⟩` and `‖∇_p L_b‖²` to the
    running sums, drops `∇_p L_a`, and hands autograd a zero-stride zero instead, so the extra memory is one copy of
    the gradient (`∇L_a`) plus one parameter's, where flattening both held four. Neither loss touches `.grad`.

    Args:
        loss_a, loss_b (`Callable[[], torch.Tensor]`): build the two scalar losses (e.g. recovery and review).
        params (`Sequence[torch.Tensor]`): the parameters; those a loss does not reach count as zero gradient.
        sharded (`bool`): whether each process holds a disjoint part of the parameters (FSDP, ZeRO-3), whose parts
            of the three sums are then summed over `group` with `torch.distributed.all_reduce`, so every process
            gets the cosine of the whole gradient, the number one device would give. Leave it `False` when every
            process holds all the parameters (DDP, ZeRO-1/2): each process's sums are then already those of its
            whole gradient, and summing them over processes would mix the processes' batches into one norm-weighted
            number that is neither; the caller averages the per-process cosines instead.
        group: the process group of the shards (`None`: the default group).
    """
    params = list(params)
    grads_a = list(torch.autograd.grad(loss_a(), params, allow_unused=True))
    sums = torch.zeros(3, dtype=torch.float32, device=params[0].device)
    for grad_a in grads_a:
        if grad_a is not None:
            sums[1] += _dot(grad_a, grad_a).to(sums.device)
    taken = set()

    def take(index: int, grad_b: torch.Tensor) -> torch.Tensor:
        taken.add(index)
        grad_a, grads_a[index] = grads_a[index], None
        if grad_a is not None:
            sums[0] += _dot(grad_a, grad_b).to(sums.device)
        sums[2] += _dot(grad_b, grad_b).to(sums.device)
        return grad_b.new_zeros(()).expand_as(grad_b)  # what autograd returns instead: no memory

    handles = [p.register_hook(lambda grad, i=i: take(i, grad)) for i, p in enumerate(params)]
    try:
        grads_b = torch.autograd.grad(loss_b(), params, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    # gradients no hook received (a torch that runs no tensor hooks on `autograd.grad`'s inputs): summed here
    for index, grad_b in enumerate(grads_b):
        if grad_b is not None and index not in taken:
            take(index, grad_b)
    del grads_b
    if sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums, group=group)
    return cosine_from_sums(sums)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`⟨a, b⟩` in float32 of two same-shaped tensors (one parameter's two gradients, or two flat vectors), over this
    process's part only when they are `DTensor`s (FSDP2): an op on the `DTensor` itself would sum over processes."""
    a, b = (t.to_local() if hasattr(t, "to_local") else t for t in (a, b))
    return torch.dot(a.flatten().float(), b.flatten().float())


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


def selection_coherence(
    model: torch.nn.Module,
    per_sample_losses: Callable[[slice], torch.Tensor],
    num_samples: int,
    kept: torch.Tensor,
    micro_batch_size: int,
) -> torch.Tensor:
    """`[Coh(full), Coh(selected), GCG]` of gap-based selection over the per-sample gradients `g_i` of `model`'s
    [`coherence_parameters`].

    Args:
        model (`torch.nn.Module`): the student.
        per_sample_losses (`Callable[[slice], torch.Tensor]`): the losses of the samples in a slice of rows, with
            gradients (one forward of `model`, whose [`coherence_module`] output is recorded).
        num_samples (`int`): how many samples were generated (the full set).
        kept (`torch.Tensor`): indices of the samples gap selection kept.
        micro_batch_size (`int`): samples per forward.

    Returns:
        `torch.Tensor`: `(3,)`, the coherence of all samples, of the kept ones, and the gain.
    """
    params = [p for _, p in coherence_parameters(model)]
    module = coherence_module(model)
    grads = []
    for begin in range(0, num_samples, micro_batch_size):
        with torch.enable_grad(), recorded_outputs(module) as outputs:
            losses = per_sample_losses(slice(begin, begin + micro_batch_size))
            grads.append(per_sample_gradients(losses, params, outputs))
    grads = torch.cat(grads)
    kept = kept.to(grads.device)
    # Coh(A) = ‖Σ g_i‖ / Σ ‖g_i‖; GCG = (Coh(selected) − Coh(full)) / Coh(full)   (docs/methods.md §4)
    return torch.stack([coherence(grads), coherence(grads[kept]), coherence_gain(grads, kept)])


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
