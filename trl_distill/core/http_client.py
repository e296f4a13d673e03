"""One HTTP client for every OpenAI-compatible endpoint the package talks to (OpenAI, vLLM, SGLang, TGI, llama.cpp,
`trl-distill serve-teacher`), with the standard library only.

[`post_json`] sends one JSON request with retries and exponential backoff on 429, 5xx, timeouts, refused connections
and malformed replies (a server killed mid-reply sends half a body), and either returns the parsed reply or raises a
[`EndpointError`] naming the URL and every failed attempt. [`ChatCompletionsClient`] builds on it for the chat judges
and the pool builder; [`~trl_distill.core.served_teacher.ServedTeacher`] for on-policy teachers. An optional
[`RateLimiter`] spaces one endpoint's requests across threads.
"""

import json
import os
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any


class EndpointError(RuntimeError):
    """A request that still failed after every retry (or failed in a way a retry cannot fix, e.g. HTTP 400/401).

    Attributes:
        url (`str`): the endpoint.
        attempts (`list[str]`): one message per failed attempt.
        status (`int` or `None`): the last HTTP status, when the server answered.
    """

    def __init__(self, url: str, attempts: list[str], status: int | None = None):
        self.url, self.attempts, self.status = url, attempts, status
        tried = f"{len(attempts)} attempt(s)"
        super().__init__(
            f"The request to {url} failed after {tried}: {'; '.join(attempts)}. Check that the server is up and "
            "reachable from this machine (curl it), or raise the timeout / retries."
        )


class RateLimiter:
    """At most `requests_per_second` request starts per second, shared by every thread that calls [`wait`].

    Args:
        requests_per_second (`float` or `None`): the limit; `None` or `0` means no limit.
    """

    def __init__(self, requests_per_second: float | None):
        if requests_per_second is not None and requests_per_second < 0:
            raise ValueError(f"requests_per_second must be positive or None, got {requests_per_second}.")
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Blocks until this caller may start its request."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def auth_headers(api_key_env: str | None) -> dict:
    """JSON content type, plus a bearer token read from the environment variable `api_key_env` when it is set."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def post_json(
    url: str,
    body: dict | None,
    *,
    headers: dict | None = None,
    timeout: float = 60.0,
    max_retries: int = 3,
    backoff: float = 1.0,
    parse: Callable[[dict], Any] = lambda payload: payload,
    rate_limiter: RateLimiter | None = None,
    errors: list | None = None,
) -> Any:
    """POSTs `body` as JSON (or GETs `url` when `body` is `None`) and returns `parse(reply)`.

    Retried, with waits of `backoff · 2^attempt` seconds: HTTP 429 and 5xx, timeouts, a refused or reset connection
    (a server restarting), and a reply that is not JSON or that `parse` rejects with `KeyError`, `IndexError`,
    `TypeError` or `ValueError` (a truncated body). Not retried: other HTTP errors (400, 401, 404: the request itself
    is wrong).

    Args:
        url (`str`): the full endpoint URL.
        body (`dict` or `None`): the JSON body; `None` sends a GET.
        headers (`dict`, *optional*): request headers (default: JSON content type).
        timeout (`float`, defaults to `60.0`): seconds to wait for one reply.
        max_retries (`int`, defaults to `3`): retries after the first attempt.
        backoff (`float`, defaults to `1.0`): the first wait in seconds, doubled each retry.
        parse (`Callable`, *optional*): turns the decoded reply into the result; its errors count as malformed.
        rate_limiter ([`RateLimiter`], *optional*): waited on before each attempt.
        errors (`list`, *optional*): each failed attempt's message is appended to it too.

    Raises:
        [`EndpointError`]: every attempt failed; it names the URL and each attempt's reason.
    """
    data = None if body is None else json.dumps(body).encode()
    headers = headers or {"Content-Type": "application/json"}
    attempts, status = [], None
    for attempt in range(max_retries + 1):
        if rate_limiter is not None:
            rate_limiter.wait()
        request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
            return parse(json.loads(raw.decode("utf-8")))
        # URL, HTTP and timeout errors are OSErrors; a truncated body fails in json.loads or in `parse`
        except (OSError, KeyError, IndexError, TypeError, ValueError) as error:
            message, retry = _failure(error, url, timeout)
            status = error.code if isinstance(error, urllib.error.HTTPError) else status
        attempts.append(message)
        if errors is not None:
            errors.append(message)
        if not retry or attempt == max_retries:
            break
        time.sleep(backoff * 2**attempt)
    raise EndpointError(url, attempts, status)


def _failure(error: Exception, url: str, timeout: float) -> tuple[str, bool]:
    """What one failed attempt of [`post_json`] says, and whether a retry may fix it (not for HTTP 4xx but 429)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} from {url}", error.code >= 500 or error.code == 429
    if isinstance(error, TimeoutError):
        return f"timeout after {timeout}s from {url}: {error}", True
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach {url}: {error.reason}", True
    if isinstance(error, OSError):  # reset mid-reply, incomplete read
        return f"connection to {url} broke: {error!r}", True
    return f"malformed response from {url}: {error!r}", True  # json.JSONDecodeError is a ValueError


class ChatCompletionsClient:
    """
    Sends one conversation at a time to `{base_url}/chat/completions` and returns the reply text.

    Args:
        base_url (`str`): the API root, e.g. `"https://api.openai.com/v1"`.
        model (`str`): the model name sent in each request.
        api_key_env (`str` or `None`, *optional*, defaults to `"OPENAI_API_KEY"`): the environment variable holding
            the API key (sent as a bearer token); the key itself is never an argument. `None` sends no key.
        timeout (`float`, *optional*, defaults to `60.0`): seconds to wait for one response.
        max_http_retries (`int`, *optional*, defaults to `3`): retries after a server error, a timeout or a malformed
            reply (named apart from the judges' `max_retries`, which re-asks after an unreadable reply).
        backoff (`float`, *optional*, defaults to `1.0`): first wait between retries in seconds, doubled each time.
        temperature (`float`, *optional*, defaults to `0.0`), max_tokens (`int`, *optional*, defaults to `512`):
            sampling settings sent with each request.
        requests_per_second (`float`, *optional*): a limit on request starts, shared by every thread using this
            client (`None`: no limit).

    Attributes:
        errors (`list[str]`): one message per failed attempt.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_http_retries: int = 3,
        backoff: float = 1.0,
        temperature: float = 0.0,
        max_tokens: int = 512,
        requests_per_second: float | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout, self.max_http_retries, self.backoff = timeout, max_http_retries, backoff  # of each request
        self.temperature, self.max_tokens = temperature, max_tokens  # sampling, unless a request overrides it
        self.rate_limiter = RateLimiter(requests_per_second)
        self.errors: list[str] = []
        if api_key_env and not os.environ.get(api_key_env):
            warnings.warn(
                f"The environment variable {api_key_env} is not set, so requests to {self.url} carry no API key. Set "
                "it, or pass api_key_env=None for a server that needs none."
            )

    def headers(self) -> dict:
        return auth_headers(self.api_key_env)

    def reply(self, messages: list[dict], **sampling) -> dict:
        """The first choice of the reply to one conversation: `{"content": str | None, "completion_tokens": int |
        None}` (`content` is `None` when the server sent none, e.g. a refusal).

        Args:
            messages (`list[dict]`): the conversation.
            **sampling: request fields overriding the client's (`temperature`, `max_tokens`, `top_p`, `seed`, `n`).

        Raises:
            [`EndpointError`]: every attempt failed.
        """
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, **sampling}  # fmt: skip

        def parse(payload):
            content = payload["choices"][0]["message"]["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}, not text")
            return {"content": content, "completion_tokens": (payload.get("usage") or {}).get("completion_tokens")}

        return post_json(
            self.url, body, headers=self.headers(), timeout=self.timeout, max_retries=self.max_http_retries,
            backoff=self.backoff, parse=parse, rate_limiter=self.rate_limiter, errors=self.errors,
        )  # fmt: skip

    def request(self, messages: list[dict]) -> str | None:
        """The reply to one conversation, or `None` once every retry failed (the reasons are in `errors`)."""
        try:
            return self.reply(messages)["content"]
        except EndpointError:
            return None
