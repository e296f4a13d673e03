"""White-box teacher–student diagnostics for models that share a tokenizer (docs/methods.md §5, last item).

On the same token sequence, at every position `t` that predicts a scored token, with `p_S = softmax(z_S / τ)` and
`p_T = softmax(z_T / τ)` over the shared vocabulary:

    forward_kl  = KL(p_T ‖ p_S)                          (generalized JSD, β = 0)
    reverse_kl  = KL(p_S ‖ p_T)                          (generalized JSD, β = 1)
    js          = ½·KL(p_T ‖ m) + ½·KL(p_S ‖ m),  m = ½·(p_S + p_T)   (β = ½)
    top1_agreement               = 1[argmax p_S = argmax p_T]
    teacher_mass_on_student_topk = Σ_{v ∈ top-k(p_S)} p_T(v)          (verl-style overlap: how much of the teacher's
    student_mass_on_teacher_topk = Σ_{v ∈ top-k(p_T)} p_S(v)           belief the student's short list covers)
    topk_overlap                 = |top-k(p_S) ∩ top-k(p_T)| / k

Reported values are means over all scored tokens of all texts (token-weighted). The divergences themselves come from
[`~trl_distill.core.divergence.generalized_jsd_from_logits`], the one place the formulas live.

The teacher may be served ([`~trl_distill.core.served_teacher.ServedTeacher`] or its URL): it is then known by its
top-`K` log-probabilities per position ([`served_per_token_diagnostics`]). `top1_agreement`,
`student_mass_on_teacher_topk` and `topk_overlap` stay exact while `top_k <= K`; the three divergences are taken over
the top-`K` plus one tail bucket and `teacher_mass_on_student_topk` counts only the teacher mass it knows: all four
exact when `K` covers the vocabulary, lower bounds below (see docs/distributed.md, "Teachers as services").
"""

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..core.divergence import generalized_jsd_from_logits, topk_tail_jsd
from ..core.served_teacher import ServedTeacher, is_served_teacher
from ..core.teachers import check_teacher_tokenizer
from ..core.tokenizers import ensure_pad_token


DIAGNOSTIC_KEYS = (
    "forward_kl",
    "reverse_kl",
    "js",
    "top1_agreement",
    "teacher_mass_on_student_topk",
    "student_mass_on_teacher_topk",
    "topk_overlap",
)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _shared_vocab_size(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tokenizer) -> int:
    # Models sharing a tokenizer often pad their embedding matrices differently (e.g. 151936 vs 152064 rows): the
    # rows past the tokenizer's vocabulary are never produced, so comparing the first len(tokenizer) is exact enough.
    v_s, v_t = student_logits.size(-1), teacher_logits.size(-1)
    if v_s == v_t:
        return v_s
    v = len(tokenizer)
    if v_s < v or v_t < v:
        raise ValueError(
            f"Student and teacher logits have {v_s} and {v_t} columns but the tokenizer has {v} tokens: the models "
            "do not share this tokenizer. Token diagnostics need one vocabulary; compare such models with `rse` instead."
        )
    return v


def _encode(tokenizer, texts: Sequence[str], prompts: Sequence | None) -> list[dict]:
    if prompts is None:
        features = []
        for text in texts:
            ids = tokenizer(text)["input_ids"]
            # position 0 has no prediction; every later token is scored
            features.append({"input_ids": ids, "score_mask": [0] + [1] * (len(ids) - 1)})
        return features
    if len(prompts) != len(texts):
        raise ValueError(
            f"`prompts` has {len(prompts)} entries but `texts` has {len(texts)}; pass one prompt per completion text, "
            "or no prompts to score whole texts."
        )
    from ..core.logprobs import encode_prompt_completion

    features = []
    for prompt, text in zip(prompts, texts):
        enc = encode_prompt_completion(tokenizer, prompt, text)
        features.append({"input_ids": enc["input_ids"], "score_mask": enc["completion_mask"]})
    return features


def _collate(features: list[dict], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Right padding keeps position ids implicit and identical for both models.
    length = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    score_mask = torch.zeros((len(features), length), dtype=torch.bool)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        attention_mask[i, :n] = 1
        score_mask[i, :n] = torch.tensor(f["score_mask"], dtype=torch.bool)
    return input_ids.to(device), attention_mask.to(device), score_mask.to(device)


def per_token_diagnostics(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, top_k: int = 8, temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """
    Teacher–student diagnostics at every position of explicit logits.

    Args:
        student_logits (`torch.Tensor`):
            Student logits of shape `(..., V)`.
        teacher_logits (`torch.Tensor`):
            Teacher logits of the same shape (same vocabulary).
        top_k (`int`, *optional*, defaults to `8`):
            Size of the top-k sets used for the mass and overlap diagnostics.
        temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature applied to both models.

    Returns:
        `dict[str, torch.Tensor]`: one float tensor of shape `(...)` per key of `DIAGNOSTIC_KEYS`.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in "
            "shape; slice both to the same positions and vocabulary first."
        )
    vocab_size = student_logits.size(-1)
    if not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must lie in [1, vocab size = {vocab_size}], got {top_k}.")
    s = student_logits.float()
    t = teacher_logits.float()
    p_s = torch.softmax(s / temperature, dim=-1)
    p_t = torch.softmax(t / temperature, dim=-1)
    top_s = s.topk(top_k, dim=-1).indices
    top_t = t.topk(top_k, dim=-1).indices
    in_top_s = torch.zeros_like(p_s, dtype=torch.bool).scatter_(-1, top_s, True)
    in_top_t = torch.zeros_like(p_t, dtype=torch.bool).scatter_(-1, top_t, True)
    return {
        "forward_kl": generalized_jsd_from_logits(s, t, beta=0.0, temperature=temperature),
        "reverse_kl": generalized_jsd_from_logits(s, t, beta=1.0, temperature=temperature),
        "js": generalized_jsd_from_logits(s, t, beta=0.5, temperature=temperature),
        "top1_agreement": (s.argmax(-1) == t.argmax(-1)).float(),
        "teacher_mass_on_student_topk": p_t.gather(-1, top_s).sum(-1),
        "student_mass_on_teacher_topk": p_s.gather(-1, top_t).sum(-1),
        "topk_overlap": (in_top_s & in_top_t).sum(-1).float() / top_k,
    }


def served_per_token_diagnostics(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    top_k: int = 8,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """[`per_token_diagnostics`] against a teacher known by its top-`K` (sorted, `K >= top_k`) log-probabilities at
    `temperature`: `(..., V)` student logits, `(..., K)` teacher ids and log-probabilities. See the module docstring
    for which values are exact."""
    width = teacher_topk_ids.size(-1)
    if not 1 <= top_k <= width:
        raise ValueError(f"top_k must lie in [1, the served teacher's top_k = {width}], got {top_k}.")
    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    s_at_t = log_s.gather(-1, teacher_topk_ids)
    t = teacher_topk_logprobs.float()
    top_s = log_s.topk(top_k, dim=-1).indices
    # teacher mass on the student's top-k: the teacher ids it knows that are among them
    known = (teacher_topk_ids.unsqueeze(-1) == top_s.unsqueeze(-2)).any(-1) & torch.isfinite(t)
    overlap = (teacher_topk_ids[..., :top_k].unsqueeze(-1) == top_s.unsqueeze(-2)).any(-1)
    return {
        "forward_kl": topk_tail_jsd(s_at_t, t, beta=0.0),
        "reverse_kl": topk_tail_jsd(s_at_t, t, beta=1.0),
        "js": topk_tail_jsd(s_at_t, t, beta=0.5),
        "top1_agreement": (log_s.argmax(-1) == teacher_topk_ids[..., 0]).float(),
        "teacher_mass_on_student_topk": (t.exp() * known).sum(-1),
        "student_mass_on_teacher_topk": s_at_t[..., :top_k].exp().sum(-1),
        "topk_overlap": overlap.sum(-1).float() / top_k,
    }


def _served_logprobs(teacher: ServedTeacher, input_ids, attention_mask, temperature: float):
    """`(B, L-1, K)` ids and log-probabilities of a served teacher, position `t-1` predicting token `t`."""
    sequences = [row[mask.bool()].tolist() for row, mask in zip(input_ids.cpu(), attention_mask.cpu())]
    batch, length = input_ids.size(0), input_ids.size(1) - 1
    ids = torch.zeros(batch, length, teacher.top_k, dtype=torch.long)
    logprobs = torch.full((batch, length, teacher.top_k), float("-inf"))
    for i, (row_ids, row_logprobs, _) in enumerate(teacher.score(sequences, [1] * batch, temperature)):
        ids[i, : len(row_ids)] = torch.from_numpy(row_ids)
        logprobs[i, : len(row_ids)] = torch.from_numpy(row_logprobs)
    return ids.to(input_ids.device), logprobs.to(input_ids.device)


@torch.no_grad()
def token_diagnostics(
    student,
    teacher,
    tokenizer,
    texts: Sequence[str],
    prompts: Sequence | None = None,
    batch_size: int = 8,
    top_k: int = 8,
    temperature: float = 1.0,
    return_per_token: bool = False,
    show_progress: bool = False,
    check_tokenizer: bool = True,
) -> dict:
    """
    Per-token KL, JS, top-1 agreement and top-k mass between a student and a teacher that share a tokenizer.

    Both models read the same token sequences in batches (forward only, `no_grad`, eval mode restored afterwards);
    see the module docstring for the formulas.

    Example:
    ```python
    >>> from trl_distill.evaluation.diagnostics import token_diagnostics
    >>> stats = token_diagnostics(student, teacher, tokenizer, ["The sky is blue."], top_k=4)
    >>> stats["forward_kl"], stats["top1_agreement"]
    ```

    Args:
        student (`PreTrainedModel`): the student causal LM.
        teacher (`PreTrainedModel`, [`~trl_distill.core.served_teacher.ServedTeacher`] or `str`): the teacher causal
            LM, with the student's tokenizer (vocabulary). A served teacher (or its URL) is known by its top-k
            log-probabilities: see the module docstring for what stays exact.
        tokenizer (`PreTrainedTokenizerBase`): the shared tokenizer, with a pad token (or an EOS token, used for pads).
        texts (`Sequence[str]`): texts to score: every token after the first, or with `prompts` the completion tokens.
        prompts (`Sequence[str | list[dict]]`, *optional*): one prompt per text (plain or conversational, rendered as
            in training), so that only completion tokens are scored.
        batch_size (`int`, *optional*, defaults to `8`): texts per forward pass. Full `(batch, length, vocab)` logits
            of both models are held, so lower it for large vocabularies.
        top_k (`int`, *optional*, defaults to `8`): size of the top-k sets of `teacher_mass_on_student_topk`,
            `student_mass_on_teacher_topk` and `topk_overlap`.
        temperature (`float`, *optional*, defaults to `1.0`): softmax temperature applied to both models.
        return_per_token (`bool`, *optional*, defaults to `False`): also return, under `"per_token"`, one dict per
            text with a 1-D tensor per diagnostic over its scored tokens.
        show_progress (`bool`, *optional*, defaults to `False`): show a progress bar over batches.
        check_tokenizer (`bool`, *optional*, defaults to `True`): refuse a teacher saved with another tokenizer (see
            [`~trl_distill.core.teachers.check_teacher_tokenizer`]): comparing the first columns of two vocabularies
            would give numbers that mean nothing.

    Returns:
        `dict`: the token-weighted mean over every scored token of each key of `DIAGNOSTIC_KEYS`, `"num_tokens"`
        (scored tokens), `"top_k"`, and `"per_token"` when asked for.
    """
    if isinstance(texts, str):
        raise TypeError("`texts` must be a list of strings, not a single string; wrap it: `[text]`.")
    if len(texts) == 0:
        raise ValueError("`texts` is empty; pass at least one text to compare the student and the teacher on.")
    teacher, served = _checked_teacher(teacher, student, tokenizer, check_tokenizer)
    sums, num_tokens, per_token = _summed_diagnostics(
        student, teacher, served, tokenizer, texts, prompts, batch_size, top_k, temperature, return_per_token,
        show_progress,
    )  # fmt: skip
    return _means(sums, num_tokens, top_k, per_token)


def _checked_teacher(teacher, student, tokenizer, check_tokenizer: bool):
    """The teacher (a served one built from its spec) and whether it is served, its tokenizer checked if asked."""
    served = is_served_teacher(teacher)
    if served:
        teacher = ServedTeacher.from_spec(teacher)
        if check_tokenizer:
            teacher.check_tokenizer(tokenizer, student.get_output_embeddings().weight.shape[0])
    elif check_tokenizer:
        check_teacher_tokenizer(tokenizer, teacher)
    return teacher, served


def _summed_diagnostics(
    student, teacher, served: bool, tokenizer, texts, prompts, batch_size, top_k, temperature, keep_per_token, progress
) -> tuple[dict, int, list | None]:
    """Both models read `texts` batch by batch, in eval mode meanwhile: each diagnostic summed over the scored tokens,
    their number, and the per-text values when `keep_per_token`."""
    pad_token_id = ensure_pad_token(tokenizer)
    features = _encode(tokenizer, texts, prompts)
    device = _device_of(student)
    modes = (student.training, None if served else teacher.training)
    student.eval()
    if not served:
        teacher.eval()
    sums = dict.fromkeys(DIAGNOSTIC_KEYS, 0.0)
    num_tokens = 0
    per_token: list[dict] | None = [] if keep_per_token else None
    try:
        starts = range(0, len(features), batch_size)
        for start in tqdm(starts, desc="token diagnostics", leave=False, disable=not progress):
            batch = features[start : start + batch_size]
            input_ids, attention_mask, score_mask = _collate(batch, pad_token_id, device)
            mask = score_mask[:, 1:]  # logits at position t-1 predict token t, so the mask shifts left by one
            values = _batch_diagnostics(
                student, teacher, served, tokenizer, input_ids, attention_mask, mask, top_k, temperature
            )
            sums, num_tokens = _accumulate(sums, num_tokens, values, mask, per_token)
    finally:
        student.train(modes[0])
        if not served:
            teacher.train(modes[1])
    return sums, num_tokens, per_token


def _batch_diagnostics(
    student, teacher, served: bool, tokenizer, input_ids, attention_mask, mask, top_k: int, temperature: float
) -> dict[str, torch.Tensor]:
    """One batch: both models read the sequences; the diagnostics at each scored position (`mask`), flattened."""
    s_logits = student(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    if served:
        t_ids, t_logprobs = _served_logprobs(teacher, input_ids, attention_mask, temperature)
        return served_per_token_diagnostics(
            s_logits[mask], t_ids[mask], t_logprobs[mask], top_k=top_k, temperature=temperature
        )
    t_logits = teacher(
        input_ids=input_ids.to(_device_of(teacher)), attention_mask=attention_mask.to(_device_of(teacher))
    ).logits[:, :-1]
    t_logits = t_logits.to(s_logits.device)
    vocab_size = _shared_vocab_size(s_logits, t_logits, tokenizer)
    return per_token_diagnostics(
        s_logits[..., :vocab_size][mask],
        t_logits[..., :vocab_size][mask],
        top_k=top_k,
        temperature=temperature,
    )


def _accumulate(sums: dict, num_tokens: int, values: dict, mask: torch.Tensor, per_token: list | None):
    """Adds one batch's per-token values to the running sums (and, when kept, to the per-text lists)."""
    for key in DIAGNOSTIC_KEYS:
        sums[key] += values[key].sum().item()
    if per_token is not None:
        lengths = mask.sum(-1).tolist()
        split = {key: values[key].cpu().split(lengths) for key in DIAGNOSTIC_KEYS}
        per_token += [{key: split[key][i] for key in DIAGNOSTIC_KEYS} for i in range(mask.size(0))]
    return sums, num_tokens + int(mask.sum().item())


def _means(sums: dict, num_tokens: int, top_k: int, per_token: list | None) -> dict:
    """The token-weighted means of [`token_diagnostics`], from the sums over every scored token."""
    if num_tokens == 0:
        raise ValueError(
            "No token was scored: every text is at most one token long (or every completion is empty). Pass longer "
            "texts."
        )
    result = {key: sums[key] / num_tokens for key in DIAGNOSTIC_KEYS}
    result["num_tokens"] = num_tokens
    result["top_k"] = top_k
    if per_token is not None:
        result["per_token"] = per_token
    return result


class TokenDiagnosticsCallback(TrainerCallback):
    """
    A [`~transformers.TrainerCallback`] that logs [`token_diagnostics`] of the model being trained against a fixed
    teacher every `log_every` optimizer steps (and once before training starts, as a baseline).

    Logged keys are `f"{prefix}{key}"` for every key of `DIAGNOSTIC_KEYS`, e.g. `diagnostics/forward_kl`.

    Usage:
    ```python
    >>> trainer = SFTTrainer(...)
    >>> trainer.add_callback(TokenDiagnosticsCallback(teacher, tokenizer, texts, log_every=50, trainer=trainer))
    ```

    Args:
        teacher (`PreTrainedModel`):
            The teacher; it must share the student's tokenizer. It is only run forward.
        tokenizer (`PreTrainedTokenizerBase`):
            The shared tokenizer.
        texts (`Sequence[str]`):
            Fixed texts (or completions, with `prompts`) to compare on. Keep them few: this runs at every logging step.
        log_every (`int`, *optional*, defaults to `50`):
            Logging frequency in optimizer steps.
        prompts (`Sequence`, *optional*):
            One prompt per text; only completion tokens are then scored.
        trainer (`Trainer`, *optional*):
            When given, metrics go through `trainer.log`, so every reporting integration (W&B, TensorBoard...) sees
            them. Otherwise they are appended to `state.log_history` (kept in `trainer_state.json`).
        batch_size (`int`, *optional*, defaults to `8`), top_k (`int`, *optional*, defaults to `8`),
        temperature (`float`, *optional*, defaults to `1.0`):
            Passed to [`token_diagnostics`].
        log_at_start (`bool`, *optional*, defaults to `True`):
            Also log at step 0, before the first update.
        prefix (`str`, *optional*, defaults to `"diagnostics/"`):
            Prefix of the logged keys.
    """

    def __init__(
        self,
        teacher,
        tokenizer,
        texts: Sequence[str],
        log_every: int = 50,
        prompts: Sequence | None = None,
        trainer=None,
        batch_size: int = 8,
        top_k: int = 8,
        temperature: float = 1.0,
        log_at_start: bool = True,
        prefix: str = "diagnostics/",
    ):
        if log_every < 1:
            raise ValueError(f"log_every must be a positive number of steps, got {log_every}.")
        if len(texts) == 0:
            raise ValueError("`texts` is empty; pass a few held-out texts to compare the student and teacher on.")
        if is_served_teacher(teacher):  # once here, not at every logging step
            teacher = ServedTeacher.from_spec(teacher)
            teacher.check_tokenizer(tokenizer)
        else:
            check_teacher_tokenizer(tokenizer, teacher)
        self.teacher = teacher
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.log_every = log_every
        self.trainer = trainer
        self.prompts = None if prompts is None else list(prompts)
        self.batch_size, self.top_k, self.temperature = batch_size, top_k, temperature
        self.log_at_start = log_at_start
        self.prefix = prefix
        self._last_logged_step = -1

    def _log(self, state, model) -> None:
        if state.global_step == self._last_logged_step:
            return
        self._last_logged_step = state.global_step
        if self.trainer is not None:
            model = self.trainer.accelerator.unwrap_model(model)
        settings = dict(
            prompts=self.prompts, batch_size=self.batch_size, top_k=self.top_k, temperature=self.temperature
        )
        stats = token_diagnostics(model, self.teacher, self.tokenizer, self.texts, check_tokenizer=False, **settings)
        logs = {f"{self.prefix}{key}": stats[key] for key in DIAGNOSTIC_KEYS}
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": state.global_step})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.log_at_start and model is not None:
            self._log(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step % self.log_every == 0:
            self._log(state, model)
