"""`trl-distill serve-teacher MODEL`: a teacher behind the subset of vLLM's OpenAI-compatible server that trl-distill
uses, with transformers on CPU or GPU.

```bash
trl-distill serve-teacher Qwen/Qwen2.5-7B-Instruct --host 0.0.0.0 --port 8000     # on the teacher's machine
trl-distill camopd ... --teacher_models '{"general": "http://teacher-host:8000/v1"}'  # on the training machine
```

Endpoints (under `/v1`):

- `GET /models`: the served model, with a `tokenizer` object (`name`, `size`, `vocab_size`, `vocab_sha256`) that
  [`~trl_distill.core.served_teacher.ServedTeacher`] checks against the student's tokenizer;
- `POST /tokenize`: `{"prompt": text}` → `{"tokens": [...]}`;
- `POST /completions`: `prompt` as text, token ids, or a list of either; `prompt_logprobs=k` returns, per position,
  the top-`k` log-probabilities and that of the position's own token, as vLLM does (`"logprobs_format": "compact"`
  returns base64 arrays instead, see [`~trl_distill.core.served_teacher`]); `max_tokens` tokens are generated;
- `POST /chat/completions`: `messages`, `n`, `temperature`, `top_p`, `max_tokens`, `seed`: for pools and judges.

It is a test and small-scale server (one forward at a time, no continuous batching): for throughput, run vLLM
(`vllm serve MODEL`), which speaks the same requests.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from ..core.served_teacher import encode_array, tokenizer_fingerprint


class TeacherServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` answering the vLLM subset above for one model.

    Args:
        model ([`~transformers.PreTrainedModel`]): the teacher, in eval mode on its device.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): its tokenizer.
        address (`tuple`, defaults to `("127.0.0.1", 0)`): host and port (0: any free port, see `url`).
        name (`str`, *optional*): the model name it reports; defaults to the model's `name_or_path`.

    Attributes:
        requests (`dict[str, int]`): answered requests per path; `bytes_sent`: reply bytes so far.
    """

    daemon_threads = True
    allow_reuse_address = True
    handler_class: type | None = None  # the request handler; `None`: the module's own

    def __init__(self, model, tokenizer, address: tuple = ("127.0.0.1", 0), name: str | None = None):
        super().__init__(address, self.handler_class or _Handler)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or model.config.name_or_path or "teacher"
        self.lock = threading.Lock()  # one forward at a time
        self.requests: dict[str, int] = {}
        self.bytes_sent = 0
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root, `http://host:port/v1`."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "TeacherServer":
        """Serves in a background thread; returns itself."""
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket (the port is free again)."""
        self.shutdown()
        self.server_close()

    # ---- answers ------------------------------------------------------------------------------------------------

    def models(self) -> dict:
        tokenizer = self.tokenizer
        entry = {
            "id": self.name,
            "object": "model",
            "owned_by": "trl-distill",
            "tokenizer": {
                "name": tokenizer.name_or_path,
                "size": len(tokenizer),
                "vocab_size": int(self.model.get_output_embeddings().weight.shape[0]),
                "vocab_sha256": tokenizer_fingerprint(tokenizer),
            },
        }
        return {"object": "list", "data": [entry]}

    def tokenize(self, body: dict) -> dict:
        ids = self.tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
        return {"tokens": ids, "count": len(ids)}

    def _as_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt)["input_ids"]
        if not prompt or not all(isinstance(t, int) for t in prompt):
            raise ValueError("each prompt must be text or a non-empty list of token ids")
        return list(prompt)

    def completions(self, body: dict) -> dict:
        prompts = body["prompt"]
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        sequences = [self._as_ids(p) for p in prompts]
        k = body.get("prompt_logprobs")
        temperature = float(body.get("temperature", 1.0))
        scale = temperature if temperature > 0 else 1.0
        compact = body.get("logprobs_format") == "compact"
        starts = body.get("prompt_logprobs_start") or [1] * len(sequences)
        choices = []
        for index, sequence in enumerate(sequences):
            if k is None or int(body.get("max_tokens") or 16) > 1:
                text = self._continue(sequence, body)
            choice = {"index": index, "finish_reason": "length"}
            if k is not None:
                logprobs = self._prompt_logprobs(sequence, scale)
                if int(body.get("max_tokens") or 16) <= 1:  # a scoring request: its one token from the same forward
                    text = self.tokenizer.decode([int(logprobs[-1].argmax())], skip_special_tokens=True)
                logprobs = logprobs[:-1]
                if compact:
                    choice["prompt_logprobs_compact"] = _compact(
                        sequence, logprobs, int(k), int(starts[index]), body.get("logprobs_dtype", "float16")
                    )
                else:
                    choice["prompt_logprobs"] = [None] + [
                        _position_json(self.tokenizer, logprobs[t - 1], int(k), sequence[t])
                        for t in range(1, len(sequence))
                    ]
            choices.append({**choice, "text": text})
        return {"object": "text_completion", "model": self.name, "choices": choices}

    def chat_completions(self, body: dict) -> dict:
        ids = self.tokenizer.apply_chat_template(
            body["messages"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        choices, tokens = [], 0
        for index in range(int(body.get("n", 1))):
            seed = body.get("seed")
            request = dict(body, seed=None if seed is None else int(seed) + index)
            new = self._generate(list(ids), request)
            tokens += len(new)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            choices.append(
                {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            )
        usage = {"prompt_tokens": len(ids), "completion_tokens": tokens}
        return {"object": "chat.completion", "model": self.name, "choices": choices, "usage": usage}

    # ---- model --------------------------------------------------------------------------------------------------

    def _prompt_logprobs(self, sequence: list[int], temperature: float) -> torch.Tensor:
        """`(len, V)` log-probabilities: row `t − 1` is the distribution predicting `sequence[t]`, the last row the
        next token's."""
        device = self.model.get_output_embeddings().weight.device
        with self.lock, torch.no_grad():
            logits = self.model(input_ids=torch.tensor([sequence], device=device)).logits[0]
        return torch.log_softmax(logits.float() / temperature, dim=-1).cpu()

    def _generate(self, ids: list[int], body: dict) -> list[int]:
        max_tokens = int(body.get("max_tokens") or 16)
        temperature = float(body.get("temperature", 1.0))
        device = self.model.get_output_embeddings().weight.device
        kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_tokens,
                  "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}  # fmt: skip
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(body.get("top_p", 1.0)))
        with self.lock, torch.no_grad():
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            output = self.model.generate(torch.tensor([ids], device=device), **kwargs)
        return output[0, len(ids) :].tolist()

    def _continue(self, sequence: list[int], body: dict) -> str:
        return self.tokenizer.decode(self._generate(sequence, body), skip_special_tokens=True)


def _position_json(tokenizer, logprobs: torch.Tensor, k: int, token: int) -> dict:
    """vLLM's per-position object: the top-k, plus the position's own token with its rank."""
    values, ids = logprobs.topk(min(k, logprobs.numel()))
    entry = {
        str(i): {"logprob": v, "rank": rank + 1, "decoded_token": tokenizer.decode([i])}
        for rank, (v, i) in enumerate(zip(values.tolist(), ids.tolist()))
    }
    if str(token) not in entry:
        rank = int((logprobs > logprobs[token]).sum()) + 1
        entry[str(token)] = {
            "logprob": float(logprobs[token]),
            "rank": rank,
            "decoded_token": tokenizer.decode([token]),
        }
    return entry


def _compact(sequence: list[int], logprobs: torch.Tensor, k: int, start: int, dtype: str) -> dict:
    if not 1 <= start <= len(sequence):
        raise ValueError(f"prompt_logprobs_start {start} is outside 1..{len(sequence)}")
    rows = logprobs[start - 1 :]
    k = min(k, rows.size(-1))
    values, ids = rows.topk(k, dim=-1)
    sampled = rows.gather(-1, torch.tensor(sequence[start:]).unsqueeze(-1)).squeeze(-1)
    return {
        "start": start,
        "k": k,
        "dtype": dtype,
        "token_ids": encode_array(ids.numpy(), "int32"),
        "logprobs": encode_array(values.numpy(), dtype),
        "sampled_logprobs": encode_array(sampled.numpy().astype(np.float32), dtype),
    }


class _Handler(BaseHTTPRequestHandler):
    server: TeacherServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: one line per request would drown the trainer's logs
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.server.bytes_sent += len(data)  # before the write: a client that has read the reply sees it counted
        self.wfile.write(data)

    def _route(self, routes: dict) -> None:
        path = self.path.rstrip("/")
        if path.startswith("/v1"):
            path = path[3:]
        if path not in routes:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            body = None
            if self.command == "POST":
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            payload = routes[path](body)
        except (KeyError, TypeError, ValueError) as error:
            self._send(400, {"error": {"message": f"bad request: {error!r}", "type": "invalid_request_error"}})
            return
        self.server.requests[path] = self.server.requests.get(path, 0) + 1
        self._send(200, payload)

    def do_GET(self):
        self._route({"/models": lambda _: self.server.models()})

    def do_POST(self):
        server = self.server
        self._route(
            {"/completions": server.completions, "/chat/completions": server.chat_completions,
             "/tokenize": server.tokenize}
        )  # fmt: skip


def make_parser(prog: str | None = "trl-distill serve-teacher") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model id or local path (a Hub id needs the model in the local cache)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    parser.add_argument("--served_model_name", default=None, help="the name /v1/models reports (default: MODEL)")
    parser.add_argument("--dtype", default="auto", help="torch dtype of the weights: auto, float32, bfloat16, ...")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when visible)")
    parser.add_argument("--trust_remote_code", action="store_true", help="allow the model's own code (Hub models)")
    return parser


def load_server(args: argparse.Namespace) -> TeacherServer:
    """The server of the parsed command line, not yet serving."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.data import check_local_path

    check_local_path(args.model, "model")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, trust_remote_code=args.trust_remote_code)
    return TeacherServer(model.to(device), tokenizer, (args.host, args.port), args.served_model_name or args.model)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    server = load_server(args)
    print(f"serving {server.name} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
