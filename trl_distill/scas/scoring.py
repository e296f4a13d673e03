"""SCAS learning cost: how expensive a verified answer is for the *current* student to learn.

For one candidate answer `a` to a prompt `q`, rendered `[user: q, assistant: a]` with the student's chat template,
let `Q` be the prompt positions (assistant header included) and `A` the answer positions, both without special
tokens and without position 0. With `ℓ_t` the student's NLL of token `t` and `û_t` the unit-normalised output of the
last decoder layer's MLP up-projection at `t`:

    d_A = mean_{t∈A} ℓ_t                 d_Q = mean_{t∈Q} ℓ_t
    AA  = ‖mean_{t∈A} û_t‖²              AQ  = (mean_{t∈A} û_t) · (mean_{t∈Q} û_t)
    S   = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ

`AA` and `AQ` are the mean pairwise cosines of the answer–answer and answer–question blocks, computed through the
mean vectors, so no `T×T` matrix is built. Scoring runs through the shared engine ([`score_batches`]): forward-only,
batched (results do not depend on batch size, padding side or batch composition), sharded over processes.
"""

import contextlib
from dataclasses import asdict, dataclass

import torch

from ..core.divergence import LMHead
from ..core.engine import score_batches
from ..core.logprobs import (
    SequenceBatch,
    backbone,
    encode_prompt_completion,
    last_hidden_states,
    token_logprobs_from_hidden,
)
from ..core.pool import to_long_pool
from ..core.tokenizers import ensure_pad_token


@dataclass
class LearningCost:
    """The learning cost of one candidate answer and its parts (see the module docstring).

    Args:
        learning_cost (`float`): `S`, lower = cheaper to learn = preferred.
        d_A (`float`): mean student NLL over the answer tokens.
        d_Q (`float`): mean student NLL over the prompt tokens.
        AA (`float`): answer–answer feature coherence `‖mean_A û‖²`.
        AQ (`float`): answer–question feature alignment `mean_A û · mean_Q û`.
        num_answer_tokens (`int`): size of `A`.
        num_prompt_tokens (`int`): size of `Q`.
    """

    learning_cost: float
    d_A: float
    d_Q: float
    AA: float
    AQ: float
    num_answer_tokens: int
    num_prompt_tokens: int


def learning_cost(d_A: torch.Tensor, d_Q: torch.Tensor, AA: torch.Tensor, AQ: torch.Tensor, lmbda: float = 0.5):
    """SCAS learning cost `S = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ` (METHODS.md §1), elementwise."""
    return (1 - lmbda) * d_A**2 * AA + lmbda * d_A * d_Q * AQ


UP_PROJECTION_NAMES = ("mlp.up_proj", "mlp.fc1", "mlp.c_fc", "mlp.dense_h_to_4h")


def resolve_feature_module(model, name: str | None = None) -> torch.nn.Module:
    """The module whose output gives the SCAS features: the last decoder layer's MLP up-projection.

    Resolved automatically for Llama/Qwen2/Mistral-style models (`layers[-1].mlp.up_proj`, and the usual
    alternatives), PEFT-wrapped or not. `name` overrides it: a module name from `model.named_modules()`, matched
    exactly or as a dotted suffix (e.g. `"layers.11.mlp.up_proj"`), which must identify one module.
    """
    if name is not None:
        modules = dict(model.named_modules())
        if name in modules:
            return modules[name]
        matches = [n for n in modules if n.endswith("." + name)]
        if len(matches) != 1:
            raise ValueError(
                f"feature_module={name!r} matches {len(matches)} modules of the model"
                + (f" ({matches[:4]}...)" if matches else "")
                + "; give a name from `model.named_modules()` that identifies exactly one module."
            )
        return modules[matches[0]]
    layers = getattr(backbone(model), "layers", None)
    if layers is not None and len(layers) > 0:
        for path in UP_PROJECTION_NAMES:
            module = layers[-1]
            for part in path.split("."):
                module = getattr(module, part, None)
            if isinstance(module, torch.nn.Module):
                return module
    raise ValueError(
        f"Could not find the last decoder layer's MLP up-projection of {type(model).__name__} (looked for "
        f"`layers[-1].{{{', '.join(UP_PROJECTION_NAMES)}}}`). Pass `feature_module` with its module name."
    )


@contextlib.contextmanager
def _capture_output(module: torch.nn.Module):
    captured = {}

    def hook(_module, _inputs, output):
        captured["output"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 where `mask` is set; `values` is `(B, L)` or `(B, L, D)`, `mask` is `(B, L)` in {0, 1}."""
    mask = mask.to(values.dtype)
    count = mask.sum(1).clamp(min=1)
    if values.dim() == 3:
        return torch.einsum("bl,bld->bd", mask, values) / count[:, None]
    return (values * mask).sum(1) / count


def learning_cost_batch(model, batch: SequenceBatch, lmbda: float = 0.5, feature_module=None) -> list[dict]:
    """Learning costs of every sequence of a padded batch (one forward of the student, no gradient).

    Args:
        model: the student (possibly PEFT-wrapped or ZeRO-3 partitioned).
        batch ([`SequenceBatch`]): encoded prompt–answer sequences.
        lmbda (`float`, defaults to 0.5): λ of the learning cost.
        feature_module (`torch.nn.Module` or `str`, *optional*): the up-projection (see [`resolve_feature_module`]).

    Returns:
        `list[dict]`: one [`LearningCost`] as a dict per sequence.
    """
    if not isinstance(feature_module, torch.nn.Module):
        feature_module = resolve_feature_module(model, feature_module)
    kept = (batch.attention_mask != 0) & (batch.special_mask == 0) & (batch.position_ids > 0)
    answer = kept & (batch.completion_mask != 0)
    prompt = kept & (batch.completion_mask == 0)
    with _capture_output(feature_module) as captured:
        hidden = last_hidden_states(model, batch)
    if "output" not in captured:
        raise RuntimeError(f"The feature module {type(feature_module).__name__} did not run in the forward pass.")
    head = LMHead.of(model)
    nll = -token_logprobs_from_hidden(hidden, head, batch.input_ids, (answer | prompt).long())
    features = captured["output"].float()
    features = features / features.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    d_A, d_Q = _masked_mean(nll, answer), _masked_mean(nll, prompt)
    mean_A, mean_Q = _masked_mean(features, answer), _masked_mean(features, prompt)
    AA = (mean_A * mean_A).sum(-1)
    AQ = (mean_A * mean_Q).sum(-1)
    S = learning_cost(d_A, d_Q, AA, AQ, lmbda)
    n_A, n_Q = answer.sum(1), prompt.sum(1)
    return [
        asdict(LearningCost(*(float(v) for v in values[:5]), int(values[5]), int(values[6])))
        for values in zip(S.tolist(), d_A.tolist(), d_Q.tolist(), AA.tolist(), AQ.tolist(), n_A.tolist(), n_Q.tolist())
    ]


def encode_pool(tokenizer, pool, system: str | None = None) -> list[dict]:
    """Token ids and masks of every candidate of a long-form pool (see [`encode_prompt_completion`])."""
    features = []
    # a row's `tools`/`chat_template_kwargs` reach the chat template, as SFTTrainer passes them
    tools = pool["tools"] if "tools" in pool.column_names else [None] * len(pool)
    kwargs = pool["chat_template_kwargs"] if "chat_template_kwargs" in pool.column_names else [None] * len(pool)
    for i, (prompt, completion) in enumerate(zip(pool["prompt"], pool["completion"])):
        encoded = encode_prompt_completion(tokenizer, prompt, completion, system, tools[i], kwargs[i])
        if not any(c and not s for c, s in zip(encoded["completion_mask"], encoded["special_mask"])):
            raise ValueError(
                f"Row {i}: the answer has no non-special tokens to score (completion {completion!r}). Drop the row or "
                "regenerate the answer."
            )
        features.append(encoded)
    return features


def score_features(
    model,
    features: list[dict],
    pad_token_id: int,
    lmbda: float = 0.5,
    batch_size: int = 16,
    feature_module: str | None = None,
    padding_side: str = "right",
    desc: str = "SCAS scoring",
) -> list[dict]:
    """Learning costs of already-encoded candidates (see [`scas_scores`]); same order as `features`."""
    if not 0.0 <= lmbda <= 1.0:
        raise ValueError(f"lmbda must lie in [0, 1] (0 = answer–answer term only), got {lmbda}.")
    module = resolve_feature_module(model, feature_module)

    def fn(model, batch):
        return learning_cost_batch(model, batch, lmbda, module)

    return score_batches(model, features, fn, pad_token_id, batch_size, padding_side, desc)


def scas_scores(
    model,
    tokenizer,
    pool,
    lmbda: float = 0.5,
    batch_size: int = 16,
    feature_module: str | None = None,
    system: str | None = None,
    padding_side: str = "right",
) -> list[dict]:
    """The SCAS learning cost `S` and its parts for every candidate answer of a pool, under `model` (the student).

    Forward-only and batched through the shared scoring engine: no gradient, the model's train/eval mode restored,
    a progress bar, sharded over `accelerate` processes with every rank receiving all scores (ZeRO-3 safe).

    Args:
        model: the student causal LM (a `PreTrainedModel` or `PeftModel`).
        tokenizer: the student's tokenizer (its chat template renders the pairs).
        pool (`Dataset`): a candidate pool, long or grouped, or a plain SFT dataset (see [`to_long_pool`]).
        lmbda (`float`, defaults to 0.5): λ, the weight of the answer–question term.
        batch_size (`int`, defaults to 16): sequences per forward pass.
        feature_module (`str`, *optional*): module name of the feature layer; the last decoder layer's MLP
            up-projection when unset.
        system (`str`, *optional*): a system message rendered before each prompt.
        padding_side (`str`, defaults to `"right"`): the scores do not depend on it.

    Returns:
        `list[dict]`: per candidate, in the order of the long-form pool, the keys `learning_cost`, `d_A`, `d_Q`,
        `AA`, `AQ`, `num_answer_tokens`, `num_prompt_tokens`.
    """
    long = to_long_pool(pool, require_correct=False)
    features = encode_pool(tokenizer, long, system=system)
    pad_token_id = ensure_pad_token(tokenizer)
    return score_features(model, features, pad_token_id, lmbda, batch_size, feature_module, padding_side)
