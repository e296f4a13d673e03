"""LLM judges: read the rubric as their prompt, answer with a JSON object, and are re-asked when a reply cannot be read.

[`ChatJudge`] holds the protocol (rubric conversations, lenient parsing, re-asks, failures counted, never scored as
zero); [`LocalChatJudge`] answers with a local transformers chat model, [`OpenAICompatibleJudge`] through an
OpenAI-compatible `/chat/completions` endpoint.
"""

import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from ..core.http_client import ChatCompletionsClient
from ..core.tokenizers import ensure_pad_token
from .identity import IdentityFact, as_identity_fact
from .judge_base import Judge, check_lengths, prompt_text
from .rubrics import (
    ICE_RUBRIC,
    ICE_SYSTEM_PROMPT,
    RSE_RUBRIC,
    RSE_SYSTEM_PROMPT,
    JudgeParseError,
    parse_identity,
    parse_similarity,
)


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
        content = RSE_RUBRIC.format(prompt=prompt_text(prompt), reference=reference, response=response)
        return [{"role": "system", "content": RSE_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def identity_conversation(self, prompt, response: str, identity: IdentityFact) -> list[dict]:
        """The ICE rubric conversation for one response."""
        content = ICE_RUBRIC.format(fact=identity.fact, prompt=prompt_text(prompt), response=response)
        return [{"role": "system", "content": ICE_SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def score_similarity(self, prompts, responses, references):
        check_lengths(prompts=prompts, responses=responses, references=references)
        conversations = [self.similarity_conversation(p, r, ref) for p, r, ref in zip(prompts, responses, references)]
        return self._run(conversations, parse_similarity)

    def judge_identity(self, prompts, responses, identity):
        check_lengths(prompts=prompts, responses=responses)
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
