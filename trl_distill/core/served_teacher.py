"""On-policy teachers served over HTTP, speaking the scoring subset of vLLM's OpenAI-compatible server.

A [`ServedTeacher`] sends each (prompt + completion) token sequence to `{url}/completions` with `max_tokens=1` and
`prompt_logprobs=k`, as TRL's `ServerDistillationTrainer` does, and reads back, per completion token, the teacher's
top-`k` token ids and log-probabilities and the log-probability of the token the student sampled
([`TeacherScores`]). The trainer's loss is then the divergence over the top-`k` support plus one *tail bucket*
holding the remaining mass `1 − Σ top-k` for both distributions
([`~trl_distill.core.divergence.topk_tail_jsd`]): exact when `k` covers the vocabulary, an approximation below.

Two wire formats share the endpoint:

- `"json"`: vLLM's own reply, one `{token_id: {"logprob", "rank", "decoded_token"}}` object per position;
- `"compact"`: the request adds `"logprobs_format": "compact"` and `"prompt_logprobs_start"`; the reply carries, per
  sequence, base64 little-endian arrays (`int32` ids, `float16` or `float32` log-probs) for the completion positions
  only. `trl-distill serve-teacher` speaks both; a server that ignores the two fields (vLLM) answers in JSON, which
  is read as well.

A served teacher is checked against the student's tokenizer when it is built: `{url}/models` may declare a
`tokenizer` object (`vocab_sha256` of [`tokenizer_fingerprint`], `vocab_size`), as `serve-teacher` does; a server
without it (vLLM) is probed with `{url}/tokenize` on a fixed text instead.
"""

import base64
import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .http_client import EndpointError, auth_headers, post_json


WIRE_FORMATS = ("json", "compact")
# where a generation batch carries served teachers' scores (the fields of `TeacherScores`, in order)
SCORE_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_sampled_logprobs")
PROBE_TEXT = "The teacher and the student share 1 tokenizer: ünïcode, 数字 42, <|endoftext|>?"


@dataclass
class TeacherScores:
    """A served teacher's scores of a batch of completions, aligned with the completion tokens.

    Args:
        topk_ids (`torch.Tensor`): `(B, C, K)` long, the teacher's `K` most likely tokens at each completion position.
        topk_logprobs (`torch.Tensor`): `(B, C, K)` float32, their log-probabilities; `-inf` where there is none
            (padding, or fewer than `K` entries).
        sampled_logprobs (`torch.Tensor`): `(B, C)` float32, the teacher's log-probability of the completion token
            itself (what gap selection reads); 0 outside the completion.
    """

    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
    sampled_logprobs: torch.Tensor

    def rows(self, rows: torch.Tensor) -> "TeacherScores":
        """The scores of the rows `rows`."""
        return TeacherScores(
            *(t[rows.to(t.device)] for t in (self.topk_ids, self.topk_logprobs, self.sampled_logprobs))
        )

    def tensors(self) -> tuple:
        return self.topk_ids, self.topk_logprobs, self.sampled_logprobs

    @classmethod
    def empty(cls, batch: int, length: int, k: int, device=None) -> "TeacherScores":
        return cls(
            torch.zeros(batch, length, k, dtype=torch.long, device=device),
            torch.full((batch, length, k), float("-inf"), device=device),
            torch.zeros(batch, length, device=device),
        )

    @classmethod
    def merge(cls, target: "TeacherScores | None", scores: "TeacherScores", rows: torch.Tensor, size: int):
        """`target` (a batch of `size` rows, created when `None`) with `scores` written into its rows `rows`; the
        top-k width grows to the widest teacher's, padded with `-inf` (missing)."""
        batch, length, k = scores.topk_ids.shape
        device = scores.topk_ids.device
        if target is None:
            target = cls.empty(size, length, k, device)
        width = max(k, target.topk_ids.size(-1))
        if target.topk_ids.size(-1) < width:
            grown = cls.empty(size, length, width, device)
            grown.topk_ids[..., : target.topk_ids.size(-1)] = target.topk_ids
            grown.topk_logprobs[..., : target.topk_ids.size(-1)] = target.topk_logprobs
            grown.sampled_logprobs.copy_(target.sampled_logprobs)
            target = grown
        rows = rows.to(device)
        target.topk_ids[rows, :, :k] = scores.topk_ids
        target.topk_logprobs[rows, :, :k] = scores.topk_logprobs
        target.sampled_logprobs[rows] = scores.sampled_logprobs
        return target


def tokenizer_fingerprint(tokenizer) -> str:
    """A sha256 of the tokenizer's vocabulary (token → id) and special tokens: equal fingerprints mean an id is the
    same token for both sides."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    special = sorted({t for t in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) if t})
    added = sorted(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
    payload = json.dumps([sorted(tokenizer.get_vocab().items()), special, added], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def is_served_teacher(spec) -> bool:
    """Whether a teacher spec names a served teacher: a [`ServedTeacher`], an `http(s)://` URL, or a mapping with
    a `url` key."""
    if isinstance(spec, ServedTeacher):
        return True
    if isinstance(spec, str):
        return spec.startswith(("http://", "https://"))
    return isinstance(spec, Mapping) and "url" in spec


# ---- compact wire format ---------------------------------------------------------------------------------------------


def encode_array(array: np.ndarray, dtype: str) -> str:
    """base64 of the array's little-endian bytes in `dtype`."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def decode_array(text: str, dtype: str, shape: tuple) -> np.ndarray:
    """The inverse of [`encode_array`]; raises `ValueError` when the bytes do not fill `shape`."""
    array = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.dtype(dtype).newbyteorder("<"))
    if array.size != math.prod(shape):
        raise ValueError(f"a compact array holds {array.size} values, expected {math.prod(shape)} for shape {shape}")
    return array.reshape(shape).astype(np.int64 if dtype == "int32" else np.float32)


def _parse_json_choice(choice: dict, sequence: list[int], start: int, k: int):
    positions = choice["prompt_logprobs"]
    if len(positions) != len(sequence):
        raise ValueError(f"prompt_logprobs has {len(positions)} positions for a sequence of {len(sequence)} tokens")
    n = len(sequence) - start
    ids, logprobs, sampled = np.zeros((n, k), np.int64), np.full((n, k), -np.inf, np.float32), np.zeros(n, np.float32)
    for j, entry in enumerate(positions[start:]):
        if not isinstance(entry, Mapping):
            raise TypeError(f"prompt_logprobs[{start + j}] is {entry!r}, not an object")
        items = sorted(entry.items(), key=lambda item: item[1]["rank"])[:k]
        ids[j, : len(items)] = [int(token) for token, _ in items]
        logprobs[j, : len(items)] = [item["logprob"] for _, item in items]
        actual = entry.get(str(sequence[start + j]))
        if actual is None:
            raise KeyError(f"position {start + j} lacks the logprob of its own token {sequence[start + j]}")
        sampled[j] = actual["logprob"]
    return ids, logprobs, sampled


def _parse_compact_choice(choice: dict, sequence: list[int], start: int, k: int):
    compact = choice["prompt_logprobs_compact"]
    if int(compact["start"]) != start:
        raise ValueError(f"compact scores start at {compact['start']}, expected {start}")
    n, width, dtype = len(sequence) - start, int(compact["k"]), compact["dtype"]
    ids = decode_array(compact["token_ids"], "int32", (n, width))
    logprobs = decode_array(compact["logprobs"], dtype, (n, width))
    sampled = decode_array(compact["sampled_logprobs"], dtype, (n,))
    return ids[:, :k], logprobs[:, :k], sampled


class ServedTeacher:
    """
    A teacher behind an HTTP server speaking vLLM's `/v1/completions` with `prompt_logprobs` (vLLM, or
    `trl-distill serve-teacher`).

    Example:

    ```python
    >>> teacher = ServedTeacher("http://10.0.0.5:8000/v1", top_k=20)
    >>> trainer = CaMOPDTrainer(model, {"general": teacher, "domain": "my-org/medical-7b"}, args, sources)
    ```

    Args:
        url (`str`): the API root, e.g. `"http://127.0.0.1:8000/v1"`.
        model (`str`, *optional*): the model name sent in each request; by default the first one `{url}/models`
            lists.
        top_k (`int`, defaults to `20`): teacher log-probabilities per completion token. The loss is exact when it
            covers the vocabulary (see the module docstring).
        wire (`str`, defaults to `"compact"`): `"json"` (vLLM's reply) or `"compact"` (base64 arrays).
        dtype (`str`, defaults to `"float16"`): the compact format's log-prob dtype, `"float16"` or `"float32"`.
        timeout (`float`, defaults to `60.0`), max_retries (`int`, defaults to `3`), backoff (`float`, defaults to
            `1.0`): per request, see [`~trl_distill.core.http_client.post_json`].
        chunk_size (`int`, defaults to `8`): sequences per request.
        max_concurrent_requests (`int`, defaults to `4`): requests in flight at once.
        api_key_env (`str`, *optional*): the environment variable holding a bearer token, if the server needs one.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        top_k: int = 20,
        wire: str = "compact",
        dtype: str = "float16",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        chunk_size: int = 8,
        max_concurrent_requests: int = 4,
        api_key_env: str | None = None,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"A served teacher's url must start with http:// or https://, got {url!r}.")
        if wire not in WIRE_FORMATS:
            raise ValueError(f"wire must be one of {WIRE_FORMATS}, got {wire!r}.")
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        self.url = url.rstrip("/")
        self.top_k, self.wire, self.dtype = top_k, wire, dtype
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.chunk_size, self.max_concurrent_requests = max(1, chunk_size), max(1, max_concurrent_requests)
        self.headers = auth_headers(api_key_env)
        self.errors: list[str] = []
        self._model = model
        self._info: dict | None = None

    @classmethod
    def from_spec(cls, spec) -> "ServedTeacher":
        """A served teacher from a URL string, a mapping of this class's arguments (with `url`), or itself."""
        if isinstance(spec, ServedTeacher):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        return cls(**spec)

    def __repr__(self) -> str:
        return f"ServedTeacher({self.url!r}, model={self._model!r}, top_k={self.top_k}, wire={self.wire!r})"

    def _request(self, path: str, body: dict | None, parse=lambda payload: payload):
        return post_json(
            f"{self.url}{path}", body, headers=self.headers, timeout=self.timeout, max_retries=self.max_retries,
            backoff=self.backoff, parse=parse, errors=self.errors,
        )  # fmt: skip

    @property
    def info(self) -> dict:
        """The entry of `{url}/models` for `model` (fetched once): the one with its id, else the first (a router
        listing several models)."""
        if self._info is None:
            entries = self._request("/models", None, lambda payload: list(payload["data"]))
            if not entries:
                raise ValueError(f"The served teacher at {self.url} lists no model at {self.url}/models.")
            self._info = next((e for e in entries if e.get("id") == self._model), entries[0])
        return self._info

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self.info["id"]
        return self._model

    # ---- checks --------------------------------------------------------------------------------------------------

    def check_tokenizer(self, tokenizer, vocab_size: int | None = None, name: str = "teacher") -> None:
        """Raises when the server's tokenizer is not the student's (or its vocabulary size differs from
        `vocab_size`), naming both. Uses the server's declared fingerprint, else a `/tokenize` probe, else warns."""
        declared = self.info.get("tokenizer")
        student = getattr(tokenizer, "tokenizer", tokenizer)
        student_label = f"{student.name_or_path or 'unnamed'!r} ({len(student)} tokens)"
        if declared:
            served_label = f"{declared.get('name') or self.model!r} ({declared.get('size')} tokens)"
            if declared.get("vocab_sha256") != tokenizer_fingerprint(tokenizer):
                raise ValueError(
                    f"The served teacher {name!r} at {self.url} declares the tokenizer {served_label}, which differs "
                    f"from the student's {student_label} (vocabulary fingerprints differ). On-policy distillation "
                    "compares distributions over the same token ids: serve a teacher that uses the student's tokenizer."
                )
            served_vocab = declared.get("vocab_size")
            if vocab_size is not None and served_vocab is not None and int(served_vocab) != vocab_size:
                raise ValueError(
                    f"The student model has vocab_size {vocab_size} but the served teacher {name!r} at {self.url} "
                    f"has vocab_size {served_vocab}. Use a teacher with the student's vocabulary."
                )
            return
        served_ids = self._probe_tokenize()
        if served_ids is None:
            warnings.warn(
                f"The served teacher {name!r} at {self.url} declares no tokenizer and has no /tokenize endpoint, so "
                f"it was not checked against the student's tokenizer {student_label}. Make sure they are the same."
            )
            return
        student_ids = student(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        if served_ids != student_ids:
            raise ValueError(
                f"The served teacher {name!r} at {self.url} ({self.model}) tokenizes {PROBE_TEXT!r} as "
                f"{served_ids[:12]}..., the student's tokenizer {student_label} as {student_ids[:12]}...: they are "
                "different tokenizers. Serve a teacher that uses the student's tokenizer."
            )

    def _probe_tokenize(self) -> list[int] | None:
        """The server's token ids of `PROBE_TEXT` from `{url}/tokenize`, or vLLM's `/tokenize` at the server root
        (beside `/v1`); `None` when neither answers."""
        body = {"model": self.model, "prompt": PROBE_TEXT, "add_special_tokens": False}
        root = self.url.removesuffix("/v1")
        for url in dict.fromkeys((f"{self.url}/tokenize", f"{root}/tokenize")):
            try:
                return post_json(
                    url, body, headers=self.headers, timeout=self.timeout, max_retries=0,
                    parse=lambda payload: list(payload["tokens"]),
                )  # fmt: skip
            except EndpointError:
                continue
        return None

    # ---- scoring -------------------------------------------------------------------------------------------------

    def request_body(self, sequences: list[list[int]], starts: list[int], temperature: float) -> dict:
        """The `/completions` body scoring `sequences` (compact fields only in the compact format)."""
        body = {"model": self.model, "prompt": sequences, "max_tokens": 1, "temperature": temperature,
                "prompt_logprobs": self.top_k}  # fmt: skip
        if self.wire == "compact":
            body.update(logprobs_format="compact", prompt_logprobs_start=starts, logprobs_dtype=self.dtype)
        return body

    def _score_chunk(self, sequences: list[list[int]], starts: list[int], temperature: float) -> list:
        def parse(payload):
            choices = payload["choices"]
            if len(choices) != len(sequences):
                raise ValueError(f"{len(choices)} choices for {len(sequences)} sequences")
            choices = sorted(choices, key=lambda choice: choice.get("index", 0))
            parsed = []
            for choice, sequence, start in zip(choices, sequences, starts):
                reader = _parse_compact_choice if "prompt_logprobs_compact" in choice else _parse_json_choice
                ids, logprobs, sampled = reader(choice, sequence, start, self.top_k)
                if not np.isfinite(sampled).all() or np.isnan(logprobs).any() or (logprobs > 1e-3).any():
                    raise ValueError("log-probabilities that are NaN, infinite for the sampled token, or above 0")
                parsed.append((ids, logprobs, sampled))
            return parsed

        body = self.request_body(sequences, starts, temperature)
        return self._request("/completions", body, parse)

    def score(self, sequences: list[list[int]], starts: list[int], temperature: float = 1.0) -> list[tuple]:
        """Per sequence, `(ids (n, k), logprobs (n, k), sampled (n,))` numpy arrays for its tokens from `starts[i]`
        on (`n = len(sequence) − start`), the distribution at position `t` being the one that predicts token `t`.

        Raises:
            [`~trl_distill.core.http_client.EndpointError`]: a request still failed after its retries.
        """
        if not sequences:
            return []
        if any(start < 1 for start in starts):
            raise ValueError("Every sequence needs at least one prompt token before the scored ones (start >= 1).")
        chunks = [
            (sequences[i : i + self.chunk_size], starts[i : i + self.chunk_size])
            for i in range(0, len(sequences), self.chunk_size)
        ]
        with ThreadPoolExecutor(min(self.max_concurrent_requests, len(chunks))) as pool:
            results = list(pool.map(lambda chunk: self._score_chunk(*chunk, temperature), chunks))
        return [scores for chunk in results for scores in chunk]

    def score_completions(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float = 1.0,
    ) -> TeacherScores:
        """[`TeacherScores`] of a padded generation batch (left-padded prompts, right-padded completions, as TRL's
        trainers build them), on the completion tensors' device.

        Raises:
            [`~trl_distill.core.http_client.EndpointError`]: a request still failed after its retries; nothing is
            returned, so no step trains on a failed response.
        """
        sequences, starts = [], []
        for p_ids, p_mask, c_ids, c_mask in zip(prompt_ids, prompt_mask, completion_ids, completion_mask):
            prompt = p_ids[p_mask.bool()].tolist()
            sequences.append(prompt + c_ids[c_mask.bool()].tolist())
            starts.append(len(prompt))
        batch, length = completion_ids.shape
        scores = TeacherScores.empty(batch, length, self.top_k)
        for row, (ids, logprobs, sampled) in enumerate(self.score(sequences, starts, temperature)):
            n = len(sampled)
            scores.topk_ids[row, :n] = torch.from_numpy(ids)
            scores.topk_logprobs[row, :n] = torch.from_numpy(logprobs)
            scores.sampled_logprobs[row, :n] = torch.from_numpy(sampled)
        device = completion_ids.device
        return TeacherScores(*(t.to(device) for t in (scores.topk_ids, scores.topk_logprobs, scores.sampled_logprobs)))
