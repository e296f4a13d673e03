"""A minimal client for OpenAI-compatible `/chat/completions` endpoints (OpenAI, vLLM, SGLang, TGI, llama.cpp), with
the standard library only: retries with exponential backoff on server errors (5xx, 429) and timeouts, and every
failure recorded (a conversation that still fails gives `None`, never an empty reply)."""

import json
import os
import time
import urllib.error
import urllib.request
import warnings


class ChatCompletionsClient:
    """
    Sends one conversation at a time to `{base_url}/chat/completions` and returns the reply text.

    Args:
        base_url (`str`): the API root, e.g. `"https://api.openai.com/v1"`.
        model (`str`): the model name sent in each request.
        api_key_env (`str` or `None`, *optional*, defaults to `"OPENAI_API_KEY"`): the environment variable holding
            the API key (sent as a bearer token); the key itself is never an argument. `None` sends no key.
        timeout (`float`, *optional*, defaults to `60.0`): seconds to wait for one response.
        max_http_retries (`int`, *optional*, defaults to `3`): retries after a server error or timeout (named apart
            from the judges' `max_retries`, which re-asks after an unreadable reply).
        backoff (`float`, *optional*, defaults to `1.0`): first wait between retries in seconds, doubled each time.
        temperature (`float`, *optional*, defaults to `0.0`), max_tokens (`int`, *optional*, defaults to `512`):
            sampling settings sent with each request.

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
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_http_retries = max_http_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.errors: list[str] = []
        if api_key_env and not os.environ.get(api_key_env):
            warnings.warn(
                f"The environment variable {api_key_env} is not set, so requests to {self.url} carry no API key. Set "
                "it, or pass api_key_env=None for a server that needs none."
            )

    def headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request(self, messages: list[dict]) -> str | None:
        """The reply to one conversation, or `None` once every retry failed (the reasons are in `errors`)."""
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        ).encode()
        for attempt in range(self.max_http_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=self.headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as error:
                message = f"HTTP {error.code} from {self.url}"
                retry = error.code >= 500 or error.code == 429
            except TimeoutError as error:
                message, retry = f"timeout after {self.timeout}s from {self.url}: {error}", True
            except urllib.error.URLError as error:
                timed_out = isinstance(error.reason, TimeoutError)
                message, retry = f"cannot reach {self.url}: {error.reason}", timed_out
            except (KeyError, IndexError, TypeError, ValueError) as error:
                message, retry = f"malformed response from {self.url}: {error!r}", False
            self.errors.append(message)
            if not retry or attempt == self.max_http_retries:
                return None
            time.sleep(self.backoff * 2**attempt)
        return None
