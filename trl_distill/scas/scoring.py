"""SCAS learning cost: how expensive a verified answer is for the *current* student to learn.

For one candidate answer `a` to a prompt `q`, rendered `[user: q, assistant: a]` with the student's chat template,
let `Q` be the prompt positions (assistant header included) and `A` the answer positions, both without special
tokens and without position 0. With `ℓ_t` the student's NLL of token `t` and `û_t` the unit-normalised output of the
last decoder layer's MLP up-projection at `t`:

    d_A = mean_{t∈A} ℓ_t                 d_Q = mean_{t∈Q} ℓ_t
    AA  = ‖mean_{t∈A} û_t‖²              AQ  = (mean_{t∈A} û_t) · (mean_{t∈Q} û_t)
    S   = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ

`AA` and `AQ` are the mean pairwise cosines of the answer–answer and answer–question blocks, computed through the
mean vectors, so no `T×T` matrix is built. As in the released scorer, position 0 is left out of the NLL means only
(nothing predicts it); the cosine features drop only special tokens. The released scorer also emits, for ablations:

    AA_no_diag               = (Σ_{t≠t'∈A} û_t·û_t') / (n_A² − n_A)   (0 when n_A ≤ 1) = (‖Σ_A û‖² − Σ_A ‖û‖²) / (n_A² − n_A)
    scas_score_no_diag       = (1-λ)·d_A²·AA_no_diag + λ·d_A·d_Q·AQ
    nll_weight_score         = (1-λ)·d_A² + λ·d_A·d_Q
    similarity_score         = (1-λ)·AA + λ·AQ            similarity_score_no_diag = (1-λ)·AA_no_diag + λ·AQ
    answer_mean_nll_score    = d_A

`d_Q` is taken over the prompt including the assistant header (`q_nll_scope="prompt_with_gen"`, the default) or
without it (`"prompt_no_gen"`); the features' `Q` always includes the header. Scoring runs through the shared engine ([`score_batches`]): forward-only,
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
    special_token_mask,
    template_variables,
    token_logprobs_from_hidden,
)
from ..core.pool import to_long_pool
from ..core.tokenizers import ensure_pad_token, render_chat


@dataclass
class LearningCost:
    """The learning cost of one candidate answer and its parts (see the module docstring).

    Args:
        learning_cost (`float`): `S`, lower = cheaper to learn = preferred.
        d_A (`float`): mean student NLL over the answer tokens.
        d_Q (`float`): mean student NLL over the prompt tokens.
        AA (`float`): answer–answer feature coherence `‖mean_A û‖²`.
        AQ (`float`): answer–question feature alignment `mean_A û · mean_Q û`.
        num_answer_tokens (`int`): size of `A` (the feature positions of the answer).
        num_prompt_tokens (`int`): size of `Q` (the feature positions of the prompt).
        AA_no_diag (`float`): answer–answer mean cosine without the diagonal (0 when `n_A ≤ 1`).
        scas_score_no_diag (`float`): `S` with `AA_no_diag` in place of `AA`.
        nll_weight_score (`float`): `(1-λ)·d_A² + λ·d_A·d_Q`, the NLL weights alone.
        similarity_score (`float`): `(1-λ)·AA + λ·AQ`, the feature similarities alone.
        similarity_score_no_diag (`float`): `(1-λ)·AA_no_diag + λ·AQ`.
        answer_mean_nll_score (`float`): `d_A`, under the released scorer's name.
    """

    learning_cost: float
    d_A: float
    d_Q: float
    AA: float
    AQ: float
    num_answer_tokens: int
    num_prompt_tokens: int
    AA_no_diag: float = 0.0
    scas_score_no_diag: float = 0.0
    nll_weight_score: float = 0.0
    similarity_score: float = 0.0
    similarity_score_no_diag: float = 0.0
    answer_mean_nll_score: float = 0.0


# Selection keys: every score [`scas_scores`] returns that ranks candidates (lower = preferred).
SCORE_KEYS = (
    "learning_cost",
    "scas_score_no_diag",
    "nll_weight_score",
    "similarity_score",
    "similarity_score_no_diag",
    "answer_mean_nll_score",
    "d_A",
)
Q_NLL_SCOPES = ("prompt_with_gen", "prompt_no_gen")


def learning_cost(d_A: torch.Tensor, d_Q: torch.Tensor, AA: torch.Tensor, AQ: torch.Tensor, lmbda: float = 0.5):
    """SCAS learning cost `S = (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ` (docs/methods.md §1), elementwise."""
    return (1 - lmbda) * d_A**2 * AA + lmbda * d_A * d_Q * AQ


def nll_weight_score(d_A, d_Q, lmbda: float = 0.5):
    """The released scorer's `nll_weight_score = (1-λ)·d_A² + λ·d_A·d_Q`: the learning cost's NLL weights alone."""
    return (1 - lmbda) * d_A**2 + lmbda * d_A * d_Q


def similarity_score(AA, AQ, lmbda: float = 0.5):
    """The released scorer's `similarity_score = (1-λ)·AA + λ·AQ`: the learning cost's feature cosines alone (with
    `AA_no_diag` in place of `AA`, its `similarity_score_no_diag`)."""
    return (1 - lmbda) * AA + lmbda * AQ


def mean_cosine_no_diag(sum_vector: torch.Tensor, sum_sq_norms: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine off the diagonal, `(Σ_{t≠t'} û_t·û_t') / (n² − n)` = `(‖Σ û‖² − Σ ‖û‖²) / (n² − n)`,
    from the sum of the unit vectors `(B, D)` and of their squared norms `(B,)`; 0 where `n ≤ 1` (the released
    scorer's `answer_answer_similarity_no_diag`)."""
    off_diagonal = (sum_vector * sum_vector).sum(-1) - sum_sq_norms
    pairs = n * n - n
    return torch.where(n > 1, off_diagonal / pairs.clamp(min=1), torch.zeros_like(off_diagonal))


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


def learning_cost_batch(
    model, batch: SequenceBatch, lmbda: float = 0.5, feature_module=None, q_nll_scope: str = "prompt_with_gen"
) -> list[dict]:
    """Learning costs of every sequence of a padded batch (one forward of the student, no gradient).

    Args:
        model: the student (possibly PEFT-wrapped or ZeRO-3 partitioned).
        batch ([`SequenceBatch`]): encoded prompt–answer sequences.
        lmbda (`float`, defaults to 0.5): λ of the learning cost.
        feature_module (`torch.nn.Module` or `str`, *optional*): the up-projection (see [`resolve_feature_module`]).
        q_nll_scope (`str`, defaults to `"prompt_with_gen"`): whether `d_Q` includes the assistant header
            (`"prompt_with_gen"`) or not (`"prompt_no_gen"`, read from the batch's `generation_prompt_mask`).

    Returns:
        `list[dict]`: one [`LearningCost`] as a dict per sequence.
    """
    if q_nll_scope not in Q_NLL_SCOPES:
        raise ValueError(f"q_nll_scope must be one of {Q_NLL_SCOPES}, got {q_nll_scope!r}.")
    if not isinstance(feature_module, torch.nn.Module):
        feature_module = resolve_feature_module(model, feature_module)
    answer, prompt, answer_nll, prompt_nll = _token_masks(batch, q_nll_scope)
    nll, features = _nll_and_features(model, batch, feature_module, answer_nll | prompt_nll)
    columns = _cost_columns(nll, features, answer, prompt, answer_nll, prompt_nll, lmbda)
    integers = ("num_answer_tokens", "num_prompt_tokens")
    values = {k: v.tolist() for k, v in columns.items()}
    return [
        asdict(LearningCost(**{k: (int if k in integers else float)(values[k][b]) for k in columns}))
        for b in range(batch.input_ids.shape[0])
    ]


def _token_masks(batch: SequenceBatch, q_nll_scope: str):
    """`(answer, prompt, answer_nll, prompt_nll)`: the answer and prompt tokens (no padding, no special tokens) whose
    features are averaged, and those whose NLL is (position 0, which nothing predicts, left out; with
    `"prompt_no_gen"`, the assistant header too)."""
    kept = (batch.attention_mask != 0) & (batch.special_mask == 0)
    answer = kept & (batch.completion_mask != 0)
    prompt = kept & (batch.completion_mask == 0)
    predicted = batch.position_ids > 0  # nothing predicts position 0: left out of the NLL means only
    answer_nll, prompt_nll = answer & predicted, prompt & predicted
    if q_nll_scope == "prompt_no_gen" and batch.generation_prompt_mask is not None:
        prompt_nll = prompt_nll & (batch.generation_prompt_mask == 0)
    return answer, prompt, answer_nll, prompt_nll


def _nll_and_features(model, batch: SequenceBatch, feature_module, nll_mask: torch.Tensor):
    """One forward of the student: per-token NLL where `nll_mask` is set, and the unit-normalised up-projection
    features of every token."""
    with _capture_output(feature_module) as captured:
        hidden = last_hidden_states(model, batch)
    if "output" not in captured:
        raise RuntimeError(f"The feature module {type(feature_module).__name__} did not run in the forward pass.")
    head = LMHead.of(model)
    nll = -token_logprobs_from_hidden(hidden, head, batch.input_ids, nll_mask.long())
    features = captured["output"].float()
    features = features / features.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return nll, features


def _cost_columns(nll, features, answer, prompt, answer_nll, prompt_nll, lmbda: float) -> dict[str, torch.Tensor]:
    """The per-sequence statistics of [`LearningCost`]: mean NLLs `d_A`, `d_Q`, feature similarities `AA`, `AQ`
    (and `AA` without the diagonal), and the learning cost with its ablations."""
    d_A, d_Q = _masked_mean(nll, answer_nll), _masked_mean(nll, prompt_nll)
    mean_A, mean_Q = _masked_mean(features, answer), _masked_mean(features, prompt)
    AA = (mean_A * mean_A).sum(-1)
    AQ = (mean_A * mean_Q).sum(-1)
    n_A, n_Q = answer.sum(1), prompt.sum(1)
    n = n_A.to(features.dtype)
    sum_sq_norms = torch.einsum("bl,bl->b", answer.to(features.dtype), (features * features).sum(-1))
    AA_no_diag = mean_cosine_no_diag(mean_A * n[:, None], sum_sq_norms, n)
    return {
        "learning_cost": learning_cost(d_A, d_Q, AA, AQ, lmbda),
        "d_A": d_A,
        "d_Q": d_Q,
        "AA": AA,
        "AQ": AQ,
        "num_answer_tokens": n_A,
        "num_prompt_tokens": n_Q,
        "AA_no_diag": AA_no_diag,
        "scas_score_no_diag": learning_cost(d_A, d_Q, AA_no_diag, AQ, lmbda),
        "nll_weight_score": nll_weight_score(d_A, d_Q, lmbda),
        "similarity_score": similarity_score(AA, AQ, lmbda),
        "similarity_score_no_diag": similarity_score(AA_no_diag, AQ, lmbda),
        "answer_mean_nll_score": d_A,
    }


def template_rows(dataset) -> list[dict]:
    """Each row's `tools` and `chat_template_kwargs` (the columns it has), which reach the chat template as
    `SFTTrainer` passes them."""
    columns = [c for c in ("tools", "chat_template_kwargs") if c in dataset.column_names]
    return [dict(zip(columns, values)) for values in zip(*(dataset[c] for c in columns))] or [{}] * len(dataset)


def generation_prompt_length(
    tokenizer, prompt, completion, system: str | None = None, tools=None, chat_template_kwargs: dict | None = None
) -> int:
    """Tokens the chat template's generation prompt (the assistant header) adds at the end of a conversational prompt;
    0 for plain strings. Counted as the released scorer counts it: the prompt tokenized with and without the
    generation prompt, up to their common prefix. A row's `tools` and `chat_template_kwargs` reach the template, as
    in the trained sequence (Qwen3's `enable_thinking=False` adds an empty think block to the header)."""
    if not (isinstance(prompt, list) or isinstance(completion, list)):
        return 0  # plain strings: no chat template, no header
    variables = template_variables(tools, chat_template_kwargs)
    with_gen, no_gen = (
        tokenizer(render_chat(tokenizer, prompt, system, g, **variables), add_special_tokens=False)["input_ids"]
        for g in (True, False)
    )
    common = next((i for i, (a, b) in enumerate(zip(with_gen, no_gen)) if a != b), min(len(with_gen), len(no_gen)))
    return len(with_gen) - common


def scoring_feature(tokenizer, input_ids: list[int], completion_mask: list[int], header_length: int = 0) -> dict:
    """What the scorer reads of one tokenized candidate: its `input_ids`, `completion_mask` (1 on the answer),
    `special_mask` and the `generation_prompt_mask` that `q_nll_scope="prompt_no_gen"` needs (the last
    `header_length` prompt tokens, see [`generation_prompt_length`])."""
    num_prompt = completion_mask.index(1) if 1 in completion_mask else len(input_ids)
    header = min(num_prompt, header_length)
    return {
        "input_ids": list(input_ids),
        "completion_mask": list(completion_mask),
        "special_mask": special_token_mask(tokenizer, input_ids),
        "generation_prompt_mask": [int(num_prompt - header <= t < num_prompt) for t in range(len(input_ids))],
    }


def has_answer_tokens(feature: dict) -> bool:
    """Whether an encoded candidate has an answer token the learning cost can score (not special)."""
    return any(c and not s for c, s in zip(feature["completion_mask"], feature["special_mask"]))


def check_answer_tokens(feature: dict, row: int, completion) -> None:
    """Raises, naming the pool row, if the (uncut) candidate has no answer token to score."""
    if not has_answer_tokens(feature):
        raise ValueError(
            f"Row {row}: the answer has no non-special tokens to score (completion {completion!r}). Drop the row or "
            "regenerate the answer."
        )


def encode_pool(tokenizer, pool, system: str | None = None) -> list[dict]:
    """Scoring features (see [`scoring_feature`]) of every candidate of a long-form pool, tokenized as `SFTTrainer`
    tokenizes a prompt–completion row (see [`encode_prompt_completion`]), for scoring a pool without a trainer.

    `SCASTrainer` does not call it: it scores the sequences `SFTTrainer` prepared for training. A candidate whose
    answer has no scorable token raises a `ValueError` naming the row.
    """
    features = []
    for i, (prompt, completion, template) in enumerate(zip(pool["prompt"], pool["completion"], template_rows(pool))):
        encoded = encode_prompt_completion(tokenizer, prompt, completion, system, **template)
        header = generation_prompt_length(tokenizer, prompt, completion, system, **template)
        feature = scoring_feature(tokenizer, encoded["input_ids"], encoded["completion_mask"], header)
        check_answer_tokens(feature, i, completion)
        features.append(feature)
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
    q_nll_scope: str = "prompt_with_gen",
) -> list[dict]:
    """Learning costs of already-encoded candidates (see [`scas_scores`]); same order as `features`."""
    if not 0.0 <= lmbda <= 1.0:
        raise ValueError(f"lmbda must lie in [0, 1] (0 = answer–answer term only), got {lmbda}.")
    if q_nll_scope not in Q_NLL_SCOPES:
        raise ValueError(f"q_nll_scope must be one of {Q_NLL_SCOPES}, got {q_nll_scope!r}.")
    module = resolve_feature_module(model, feature_module)

    def fn(model, batch):
        return learning_cost_batch(model, batch, lmbda, module, q_nll_scope)

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
    q_nll_scope: str = "prompt_with_gen",
) -> list[dict]:
    """The SCAS learning cost `S`, its parts and the released scorer's variants for every candidate answer of a pool, under `model` (the student).

    Forward-only and batched through the shared scoring engine: no gradient, the model's train/eval mode restored,
    a progress bar, sharded over `accelerate` processes with every rank receiving all scores (ZeRO-3 safe).

    Args:
        model: the student causal LM (a `PreTrainedModel` or `PeftModel`).
        tokenizer: the student's tokenizer (its chat template renders the pairs).
        pool (`Dataset`): a candidate pool, long or grouped, or a plain SFT dataset (see [`to_long_pool`]); a list of
            rows, a dict of columns or a released pool directory (see [`load_released_pool`]) is accepted too.
        lmbda (`float`, defaults to 0.5): λ, the weight of the answer–question term.
        batch_size (`int`, defaults to 16): sequences per forward pass.
        feature_module (`str`, *optional*): module name of the feature layer; the last decoder layer's MLP
            up-projection when unset.
        system (`str`, *optional*): a system message rendered before each prompt.
        padding_side (`str`, defaults to `"right"`): the scores do not depend on it.
        q_nll_scope (`str`, defaults to `"prompt_with_gen"`): `d_Q` over the prompt with the assistant header, or
            without it (`"prompt_no_gen"`), as the released scorer's `--q_nll_scope`.

    Returns:
        `list[dict]`: per candidate, in the order of the long-form pool, the fields of [`LearningCost`]:
        `learning_cost`, `d_A`, `d_Q`, `AA`, `AQ`, `num_answer_tokens`, `num_prompt_tokens`, `AA_no_diag`,
        `scas_score_no_diag`, `nll_weight_score`, `similarity_score`, `similarity_score_no_diag`,
        `answer_mean_nll_score`. Each of [`SCORE_KEYS`] can rank the candidates in [`scas_select`].
    """
    long = to_long_pool(pool, require_correct=False)
    features = encode_pool(tokenizer, long, system=system)
    return score_features(
        model,
        features,
        ensure_pad_token(tokenizer),
        lmbda,
        batch_size,
        feature_module,
        padding_side,
        q_nll_scope=q_nll_scope,
    )
