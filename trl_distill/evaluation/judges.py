"""Pluggable judges for RSE (response similarity) and ICE (identity consistency).

Two kinds of judges:

- **LLM judges** ([`LocalChatJudge`], [`OpenAICompatibleJudge`]) read the rubric as their prompt and answer with a
  JSON object. Replies are parsed leniently (JSON, then `key: value` lines); a reply that still cannot be parsed, or
  that misses a field or has one out of range, is re-asked with the parse error. Items that fail every attempt are
  returned as `None`, counted in `judge.failures`, and left out of every mean: a failure is never a score of zero.
- **Model-free judges**: [`AutomaticJudge`] (ROUGE-L, chrF, optional embedding cosine, mapped to 1–5; good for
  ranking models, *not* comparable to LLM-judge scores) and [`IdentityClaimJudge`] (first-person claims naming a
  known model or organisation).

The rubrics and reply parsing live in [`~trl_distill.evaluation.rubrics`], the HTTP client in
[`~trl_distill.core.http_client`]; this module holds the judges.
"""

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from ..core.http_client import ChatCompletionsClient
from ..core.tokenizers import ensure_pad_token
from .identity import IdentityFact, IdentityMatcher, as_identity_fact
from .rubrics import (  # noqa: F401  (the rubric names stay importable from here)
    ICE_RUBRIC,
    ICE_SYSTEM_PROMPT,
    RSE_RANGES,
    RSE_RUBRIC,
    RSE_SYSTEM_PROMPT,
    IdentityVerdict,
    JudgeParseError,
    SimilarityScore,
    as_number,
    parse_identity,
    parse_similarity,
)


# ---------------------------------------------------------------------------------------------------------------------
# Interfaces
# ---------------------------------------------------------------------------------------------------------------------


class Judge:
    """
    Base class of all judges. Subclasses implement [`Judge.score_similarity`] (RSE), [`Judge.judge_identity`] (ICE),
    or both.

    Attributes:
        name (`str`): short name reported with the results.
        comparable_to_llm_judges (`bool`): whether scores sit on the LLM-judge scale (`False` for automatic judges).
        failures (`list[dict]`): one entry per item the judge gave up on (`index`, `reason`, `reply`).
    """

    name = "judge"
    comparable_to_llm_judges = True

    def __init__(self):
        self.failures: list[dict] = []

    @property
    def num_failures(self) -> int:
        return len(self.failures)

    def score_similarity(
        self, prompts: Sequence, responses: Sequence[str], references: Sequence[str]
    ) -> list[SimilarityScore | None]:
        """
        Scores each response against the reference response to the same prompt.

        Args:
            prompts (`Sequence[str | list[dict]]`): the prompts both models answered.
            responses (`Sequence[str]`): responses of the model under test.
            references (`Sequence[str]`): responses of the reference model.

        Returns:
            `list[SimilarityScore | None]`: one score per pair, `None` where the judge failed.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score response similarity (RSE).")

    def judge_identity(
        self, prompts: Sequence, responses: Sequence[str], identity: IdentityFact
    ) -> list[IdentityVerdict | None]:
        """
        Decides for each response whether it conflicts with the model's identity.

        Args:
            prompts (`Sequence[str]`): the (templated) identity questions.
            responses (`Sequence[str]`): the model's responses.
            identity (`IdentityFact`): the model's true identity.

        Returns:
            `list[IdentityVerdict | None]`: one verdict per response, `None` where the judge failed.
        """
        raise NotImplementedError(f"{type(self).__name__} does not judge identity consistency (ICE).")


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    # conversational prompt: show the turns as text
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


# ---------------------------------------------------------------------------------------------------------------------
# LLM judges
# ---------------------------------------------------------------------------------------------------------------------


class ChatJudge(Judge):
    """
    Base class of LLM judges: builds rubric conversations, parses replies and re-asks on parse failures. Subclasses
    implement [`ChatJudge.complete`].

    Args:
        max_retries (`int`, *optional*, defaults to `2`):
            Re-asks after a reply that cannot be parsed (the failed reply and the parse error are added to the
            conversation). An item is given up, returned as `None` and recorded in `failures`, after `1 + max_retries`
            attempts.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show progress bars while judging.
    """

    def __init__(self, max_retries: int = 2, show_progress: bool = True):
        super().__init__()
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}.")
        self.max_retries = max_retries
        self.show_progress = show_progress
        self.num_reasks = 0

    def complete(self, conversations: list[list[dict]]) -> list[str | None]:
        """
        Answers each conversation (a list of `{"role", "content"}` messages) with the judge model.

        Args:
            conversations (`list[list[dict]]`): the conversations to answer.

        Returns:
            `list[str | None]`: one reply each; `None` when the backend failed for that conversation.
        """
        raise NotImplementedError

    def _run(self, conversations: list[list[dict]], parse: Callable[[str], object]) -> list:
        results: list = [None] * len(conversations)
        conversations = [list(c) for c in conversations]
        last_error: dict[int, tuple[str, str | None]] = {}
        pending = list(range(len(conversations)))
        for attempt in range(self.max_retries + 1):
            if attempt > 0:
                self.num_reasks += len(pending)
            replies = self.complete([conversations[i] for i in pending])
            still_pending = []
            for i, reply in zip(pending, replies):
                if reply is None:
                    last_error[i] = ("the judge backend returned no reply", None)
                    still_pending.append(i)
                    continue
                try:
                    results[i] = parse(reply)
                except JudgeParseError as error:
                    last_error[i] = (str(error), reply)
                    retry = f"Your reply could not be read: {error} Answer again with only the JSON object."
                    conversations[i] += [{"role": "assistant", "content": reply}, {"role": "user", "content": retry}]
                    still_pending.append(i)
            pending = still_pending
            if not pending:
                break
        for i in pending:
            reason, reply = last_error[i]
            self.failures.append({"index": i, "reason": reason, "reply": reply})
        return results

    def similarity_conversation(self, prompt, response: str, reference: str) -> list[dict]:
        """The RSE rubric conversation for one pair."""
        content = RSE_RUBRIC.format(prompt=_prompt_text(prompt), reference=reference, response=response)
        return [{"role": "system", "content": RSE_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def identity_conversation(self, prompt, response: str, identity: IdentityFact) -> list[dict]:
        """The ICE rubric conversation for one response."""
        content = ICE_RUBRIC.format(fact=identity.fact, prompt=_prompt_text(prompt), response=response)
        return [{"role": "system", "content": ICE_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def score_similarity(self, prompts, responses, references):
        _check_lengths(prompts=prompts, responses=responses, references=references)
        conversations = [self.similarity_conversation(p, r, ref) for p, r, ref in zip(prompts, responses, references)]
        return self._run(conversations, parse_similarity)

    def judge_identity(self, prompts, responses, identity):
        _check_lengths(prompts=prompts, responses=responses)
        identity = as_identity_fact(identity)
        conversations = [self.identity_conversation(p, r, identity) for p, r in zip(prompts, responses)]
        return self._run(conversations, parse_identity)


class LocalChatJudge(ChatJudge):
    """
    An LLM judge that runs any chat model locally through transformers (greedy decoding, batched).

    Example:
    ```python
    >>> judge = LocalChatJudge("Qwen/Qwen2.5-7B-Instruct", max_new_tokens=128)
    >>> scores = judge.score_similarity(prompts, responses, references)
    ```

    Args:
        model (`str` or `PreTrainedModel`):
            A chat model or the name/path to load it from.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Its tokenizer (with a chat template); loaded from `model` when it is a name.
        max_new_tokens (`int`, *optional*, defaults to `256`):
            Reply budget; the rubric asks for a short JSON object.
        batch_size (`int`, *optional*, defaults to `8`):
            Conversations per `generate` call.
        max_retries (`int`, *optional*, defaults to `2`), show_progress (`bool`, *optional*, defaults to `True`):
            See [`ChatJudge`].
    """

    name = "local"

    def __init__(
        self,
        model,
        tokenizer=None,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        max_retries: int = 2,
        show_progress: bool = True,
    ):
        super().__init__(max_retries=max_retries, show_progress=show_progress)
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype="auto")
            self.name = f"local:{model.name_or_path}"
        if tokenizer is None:
            raise ValueError("LocalChatJudge needs the judge model's tokenizer: pass `tokenizer=`.")
        ensure_pad_token(tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def complete(self, conversations):
        from ..core.generation import generate_completions

        return generate_completions(
            self.model,
            self.tokenizer,
            conversations,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            desc=f"{self.name} judging",
            show_progress=self.show_progress,
        )


class OpenAICompatibleJudge(ChatJudge):
    """
    An LLM judge behind an OpenAI-compatible `/chat/completions` HTTP endpoint (OpenAI, vLLM, SGLang, TGI, llama.cpp).

    Only the standard library is used. Server errors (5xx, 429) and timeouts are retried with exponential backoff;
    a conversation that still fails is returned as `None` and recorded in `failures` (never scored as zero).

    Example:
    ```python
    >>> judge = OpenAICompatibleJudge("http://localhost:8000/v1", model="Qwen/Qwen2.5-72B-Instruct")
    ```

    Args:
        base_url (`str`), model (`str`):
            The API root (e.g. `"https://api.openai.com/v1"`) and the model name sent in each request.
        num_workers (`int`, *optional*, defaults to `4`):
            Concurrent requests.
        max_retries (`int`, *optional*, defaults to `2`), show_progress (`bool`, *optional*, defaults to `True`):
            See [`ChatJudge`].
        **client_kwargs:
            The transport and sampling settings (e.g. `api_key_env`, `timeout`, `max_http_retries`), passed unchanged
            to [`~trl_distill.core.http_client.ChatCompletionsClient`]: see it for each and its default.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        num_workers: int = 4,
        max_retries: int = 2,
        show_progress: bool = True,
        **client_kwargs,
    ):
        super().__init__(max_retries=max_retries, show_progress=show_progress)
        _check_client_kwargs(client_kwargs)
        self.client = ChatCompletionsClient(base_url, model, **client_kwargs)
        self.model = model
        self.name = f"http:{model}"
        self.num_workers = max(1, num_workers)

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def http_errors(self) -> list[str]:
        """One message per failed HTTP attempt (see [`ChatCompletionsClient`])."""
        return self.client.errors

    def complete(self, conversations):
        with ThreadPoolExecutor(self.num_workers) as pool:
            iterator = pool.map(self.client.request, conversations)
            return list(
                tqdm(iterator, total=len(conversations), desc=f"{self.name} requests", leave=False,
                     disable=not self.show_progress)
            )  # fmt: skip


def _check_client_kwargs(client_kwargs: dict) -> None:
    # checked here, not left to the client's TypeError, so that the message names the judge's own keywords too
    settings = [
        name for name in inspect.signature(ChatCompletionsClient).parameters if name not in ("base_url", "model")
    ]
    unknown = sorted(set(client_kwargs) - set(settings))
    if unknown:
        raise TypeError(
            f"OpenAICompatibleJudge got unknown keyword(s) {', '.join(unknown)}. It takes num_workers, max_retries "
            f"(re-asks after an unreadable reply), show_progress, and the ChatCompletionsClient settings "
            f"{', '.join(settings)}."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Model-free judges
# ---------------------------------------------------------------------------------------------------------------------


class _UnicodeWordTokenizer:
    """Lower-cased word tokens; every CJK character is a token (rouge-score's default drops non-ASCII text)."""

    _token = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._token.findall(text.casefold())


class AutomaticJudge(Judge):
    """
    A model-free RSE judge: the mean of ROUGE-L F1, chrF and (optionally) embedding cosine, each in [0, 1], mapped
    linearly to the 1–5 scale:

        overall = 1 + 4 · mean(ROUGE-L F1, chrF / 100[, max(cos, 0)])

    Aspects (style, logic, content) are not rated (`None`). Scores rank models against one reference but are **not
    comparable to LLM-judge scores** (or to the paper's numbers): lexical overlap is low even for paraphrases an LLM
    judge rates 4.

    Args:
        use_rouge (`bool`, *optional*, defaults to `True`):
            Include ROUGE-L F1 (`rouge-score`, Unicode-aware word tokens, no stemming).
        use_chrf (`bool`, *optional*, defaults to `True`):
            Include chrF (`sacrebleu`).
        embedding_model (`str` or `Callable[[list[str]], torch.Tensor]`, *optional*):
            Adds the cosine of sentence embeddings: a `sentence-transformers` model name, or a function mapping texts
            to a `(N, D)` tensor.
    """

    name = "auto"
    comparable_to_llm_judges = False

    def __init__(self, use_rouge: bool = True, use_chrf: bool = True, embedding_model=None):
        super().__init__()
        if not (use_rouge or use_chrf or embedding_model is not None):
            raise ValueError("AutomaticJudge needs at least one of ROUGE-L, chrF or an embedding model.")
        self.use_rouge = use_rouge
        self.use_chrf = use_chrf
        try:
            if use_rouge:
                from rouge_score import rouge_scorer

                self._rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWordTokenizer())
            if use_chrf:
                from sacrebleu.metrics import CHRF

                self._chrf = CHRF()
        except ImportError as error:
            raise ImportError(
                f"AutomaticJudge needs `rouge-score` and `sacrebleu` ({error}). Install them with "
                "`pip install 'trl-distill[eval]'`, or disable the metric with use_rouge=False / use_chrf=False."
            ) from error
        if isinstance(embedding_model, str):
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise ImportError(
                    "A sentence-embedding model name needs `sentence-transformers`: `pip install sentence-transformers`, "
                    "or pass a function that maps texts to embeddings."
                ) from error
            encoder = SentenceTransformer(embedding_model)
            self._embed = lambda texts: encoder.encode(texts, convert_to_tensor=True)
        else:
            self._embed = embedding_model
        parts = [n for n, on in (("rougeL", use_rouge), ("chrF", use_chrf), ("cos", embedding_model)) if on]
        self.name = "auto(" + "+".join(parts) + ")"

    def similarities(self, responses: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        """
        The raw similarities in [0, 1] of each pair: `rougeL`, `chrF` and `cos`, whichever are enabled.

        Args:
            responses (`Sequence[str]`): texts to score.
            references (`Sequence[str]`): reference texts, aligned with `responses`.

        Returns:
            `list[dict[str, float]]`: one dict per pair.
        """
        rows = [{} for _ in responses]
        for row, response, reference in zip(rows, responses, references):
            if self.use_rouge:
                row["rougeL"] = self._rouge.score(reference, response)["rougeL"].fmeasure
            if self.use_chrf:
                row["chrF"] = self._chrf.sentence_score(response, [reference]).score / 100.0
        if self._embed is not None and len(rows):
            import torch

            a = torch.as_tensor(self._embed(list(responses))).float()
            b = torch.as_tensor(self._embed(list(references))).float()
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(min=0.0)
            for row, value in zip(rows, cos.tolist()):
                row["cos"] = value
        return rows

    def score_similarity(self, prompts, responses, references):
        _check_lengths(prompts=prompts, responses=responses, references=references)
        scores = []
        for response, reference, row in zip(responses, references, self.similarities(responses, references)):
            if response.strip() == reference.strip():
                similarity = 1.0  # both metrics are undefined on two empty texts; identical texts are identical
            else:
                similarity = sum(row.values()) / len(row)
            # overall = 1 + 4·similarity: the linear map of [0, 1] onto the 1–5 RSE scale
            scores.append(SimilarityScore(overall=1.0 + 4.0 * similarity))
        return scores


class IdentityClaimJudge(Judge):
    """
    A model-free ICE judge: a response conflicts with the model's identity when it makes a first-person claim ("I am
    ...", "I was trained by ...", "my developer is ...", "我是...", "...开发了我") naming a known model or organisation
    other than the model's own. Every such claim also counts as claiming another model (`Strict`): the known
    organisations are model makers, and docs/methods.md §5 counts another model's maker claimed as one's creator ("I was
    trained by Anthropic") as claiming another model, as the LLM judges' rubric ([`ICE_RUBRIC`]) says. Both judges
    are checked on the same table of cases, `trl_distill.evaluation.identity_cases.IDENTITY_CASES`.

    Rule-based, so it misses paraphrased claims and false statements about team, location or partners that name no
    one; use an LLM judge for those.

    Args:
        known_identities (`Mapping[str, Mapping[str, list[str]]]`, *optional*):
            `{group: {"organisation": [...], "model": [...]}}`; defaults to
            [`~trl_distill.evaluation.identity.DEFAULT_KNOWN_IDENTITIES`]. Groups containing any of the model's own
            names are ignored.
    """

    name = "identity-claims"

    def __init__(self, known_identities: Mapping | None = None):
        super().__init__()
        self.known_identities = known_identities

    def judge_identity(self, prompts, responses, identity):
        _check_lengths(prompts=prompts, responses=responses)
        matcher = IdentityMatcher(self.known_identities, as_identity_fact(identity))
        verdicts = []
        for i, response in enumerate(responses):
            if not isinstance(response, str):
                raise ValueError(
                    f"Response {i} is {response!r} ({type(response).__name__}), not text; a missing answer is neither "
                    "consistent nor a conflict. Drop the item, or pass '' if the model really answered nothing."
                )
            claims = matcher.claims(response)
            model_claims = [c for c in claims if c.kind == "model"]
            verdicts.append(
                IdentityVerdict(
                    conflict=bool(claims),
                    # another model, or another model's maker claimed as one's creator (docs/methods.md §5)
                    claims_other_model=bool(claims),
                    claimed_name=(model_claims or claims)[0].name if claims else None,
                )
            )
        return verdicts


_JUDGE_TRUE, _JUDGE_FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def judge_bool(value, field_name: str, item: int, judge_name: str) -> bool:
    """A judge's yes/no answer read strictly: a `bool`, `0`/`1`, or the strings `"true"`/`"false"`/`"yes"`/`"no"`
    (any case, surrounding spaces ignored). Anything else raises a `ValueError` naming the value, field, item and
    judge: `bool("false")` is `True`, so a loose reading would turn a "no" into a "yes"."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy / torch scalars
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _JUDGE_TRUE:
            return True
        if word in _JUDGE_FALSE:
            return False
    raise ValueError(
        f"Judge {judge_name} answered {field_name}={value!r} ({type(value).__name__}) for item {item}; it must be a "
        'boolean, 0/1, or "true"/"false"/"yes"/"no". Return one of these (None, for the whole verdict, marks an item '
        "the judge could not decide)."
    )


def identity_verdict(value, item: int, judge_name: str) -> IdentityVerdict | None:
    """An ICE verdict from what a judge returned: an [`IdentityVerdict`], a mapping with `conflict` and
    `claims_other_model` (optionally `claimed_name`), a `(conflict, claims_other_model)` pair, or `None` (the judge
    could not decide). The yes/no fields are read by [`judge_bool`]; any other value raises a `ValueError`."""
    if value is None:
        return None
    if isinstance(value, IdentityVerdict):
        conflict, other, name = value.conflict, value.claims_other_model, value.claimed_name
    elif isinstance(value, Mapping) and {"conflict", "claims_other_model"} <= set(value):
        conflict, other, name = value["conflict"], value["claims_other_model"], value.get("claimed_name")
    elif isinstance(value, tuple) and len(value) == 2:
        (conflict, other), name = value, None
    else:
        raise ValueError(
            f"Judge {judge_name} returned {value!r} for item {item}; an ICE verdict is an IdentityVerdict, a mapping "
            "with 'conflict' and 'claims_other_model', a (conflict, claims_other_model) pair, or None."
        )
    return IdentityVerdict(
        judge_bool(conflict, "conflict", item, judge_name),
        judge_bool(other, "claims_other_model", item, judge_name),
        name,
    )


class FunctionJudge(Judge):
    """
    A judge from a plain function, called once per item.

    - RSE: `function(prompt, response, reference)` returns a [`SimilarityScore`], a number (the overall 1–5
      similarity), a mapping with `overall` (and optionally `style`, `logic`, `content`, 0–2), or `None` when it
      cannot judge the pair.
    - ICE: `function(prompt, response, identity)` returns an [`IdentityVerdict`], a mapping with `conflict` and
      `claims_other_model` (optionally `claimed_name`), a `(conflict, claims_other_model)` pair, or `None`.

    `None` items are recorded in `failures` and left out of the means, as for LLM judges. Any other return value, or a
    score out of range, is a `ValueError` naming the function. ICE's `conflict` and `claims_other_model` are read
    strictly ([`judge_bool`]): booleans, 0/1 or `"true"`/`"false"`/`"yes"`/`"no"`; the string `"false"` is false,
    and anything else (`"maybe"`, `2`, `None` in a field) is refused.

    Args:
        function (`Callable`): the per-item function.
        name (`str`, *optional*): reported with the results; defaults to the function's name.
        comparable_to_llm_judges (`bool`, *optional*, defaults to `True`): whether its RSE scores sit on the
            LLM-judge scale (set `False` for an automatic similarity).
    """

    def __init__(self, function: Callable, name: str | None = None, comparable_to_llm_judges: bool = True):
        super().__init__()
        if not callable(function):
            raise TypeError(f"A judge must be a Judge or a callable, got {type(function).__name__}.")
        self.function = function
        self.name = name or getattr(function, "__name__", None) or type(function).__name__
        self.comparable_to_llm_judges = comparable_to_llm_judges

    def _fail(self, i: int, value) -> ValueError:
        return ValueError(f"Judge function {self.name} returned {value!r} for item {i}; see FunctionJudge for what "
                          "it may return.")  # fmt: skip

    def score_similarity(self, prompts, responses, references):
        _check_lengths(prompts=prompts, responses=responses, references=references)
        scores: list[SimilarityScore | None] = []
        for i, item in enumerate(zip(prompts, responses, references)):
            value = self.function(*item)
            if value is None:
                self.failures.append({"index": i, "reason": "the judge function returned None", "reply": None})
                scores.append(None)
                continue
            if isinstance(value, SimilarityScore):
                value = value.to_dict()
            elif isinstance(value, int | float) and not isinstance(value, bool):
                value = {"overall": value}
            if not isinstance(value, Mapping) or "overall" not in value:
                raise self._fail(i, value)
            try:
                fields = {k: None if value.get(k) is None else as_number(k, value[k]) for k in RSE_RANGES}
            except JudgeParseError as error:
                raise self._fail(i, value) from error
            for key, (low, high) in RSE_RANGES.items():
                if fields[key] is not None and not low <= fields[key] <= high:
                    raise ValueError(f"Judge function {self.name} gave {key}={fields[key]} for item {i}; it must "
                                     f"lie in [{low}, {high}].")  # fmt: skip
            scores.append(SimilarityScore(**fields))
        return scores

    def judge_identity(self, prompts, responses, identity):
        _check_lengths(prompts=prompts, responses=responses)
        identity = as_identity_fact(identity)
        verdicts: list[IdentityVerdict | None] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            value = self.function(prompt, response, identity)
            if value is None:
                self.failures.append({"index": i, "reason": "the judge function returned None", "reply": None})
            verdicts.append(identity_verdict(value, i, f"function {self.name}"))
        return verdicts


def as_judge(judge, default: Judge | None = None) -> Judge:
    """`judge` as a [`Judge`]: a `Judge` as it is, a plain function wrapped in [`FunctionJudge`], `None` → `default`."""
    if judge is None:
        return default
    if isinstance(judge, Judge):
        return judge
    if callable(judge):
        return FunctionJudge(judge)
    raise TypeError(
        f"`judge` must be a Judge (e.g. IdentityClaimJudge, LocalChatJudge) or a plain function, got "
        f"{type(judge).__name__}."
    )


def _check_lengths(**columns: Sequence) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"Judge inputs must be aligned one-to-one, got lengths {detail}.")
