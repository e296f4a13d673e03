"""build_pool with endpoint teachers, against a loopback fake chat server that counts requests and injects 429, 500
and timeouts: bounded concurrency, retries, a per-teacher rate limit, and resume without re-asking answered prompts."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from datasets import Dataset

from trl_distill.pool.build_pool_config import BuildPoolConfig, TeacherSpec
from trl_distill.pool.builder import PoolIncompleteError, build_pool


PROMPTS = [f"question {i}" for i in range(5)]


class FakeChat(ThreadingHTTPServer):
    """Answers `<prompt> #<seed>`; `faults` maps a prompt to the faults its next requests get ("429", "500",
    "slow"); `broken` prompts always get HTTP 500. Records every request and the peak number in flight per model."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.lock = threading.Lock()
        self.faults: dict[str, list] = {}
        self.broken: set = set()
        self.answered: list = []  # (model, prompt, seed) of each successful reply
        self.starts: dict[str, list] = {}
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server, model, prompt = self.server, body["model"], body["messages"][-1]["content"]
        with server.lock:
            server.starts.setdefault(model, []).append(time.monotonic())
            server.in_flight[model] = server.in_flight.get(model, 0) + 1
            server.peak[model] = max(server.peak.get(model, 0), server.in_flight[model])
            queue = server.faults.get(prompt) or []
            fault = queue.pop(0) if queue else ("500" if prompt in server.broken else None)
        try:
            time.sleep(0.02)  # long enough for requests to overlap
            if fault in ("429", "500"):
                return self._reply(int(fault), {"error": "injected"})
            if fault == "slow":  # past the client's timeout: it has given up, so this reply is never read
                time.sleep(0.5)
                return None
            with server.lock:
                server.answered.append((model, prompt, body["seed"]))
            content = f"{prompt} #{body['seed']}"
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": content}}],
                              "usage": {"completion_tokens": 3}})  # fmt: skip
        finally:
            with server.lock:
                server.in_flight[model] -= 1


@pytest.fixture
def chat():
    server = FakeChat()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def always_right(prompts, completions, **columns):
    return [1.0] * len(completions)


def endpoint(chat, name, **settings):
    return {"name": name, "model": name, "base_url": chat.url, "backoff": 0.01, "timeout": 0.3, **settings}


def run(chat, tmp_path, teachers, **kwargs):
    dataset = Dataset.from_dict({"prompt": PROMPTS})
    return build_pool(
        teachers, dataset, str(tmp_path / "pool"), n=2, verifier=always_right, shard_size=2, show_progress=False,
        **kwargs,
    )  # fmt: skip


def test_endpoint_teachers_retry_respect_concurrency_and_rate(chat, tmp_path):
    chat.faults = {PROMPTS[0]: ["429", "500"], PROMPTS[3]: ["slow"]}
    teachers = [endpoint(chat, "wide", max_concurrency=3), endpoint(chat, "paced", requests_per_second=25)]
    pool = run(chat, tmp_path, teachers)
    assert len(pool) == 2 * len(PROMPTS) * 2
    # every answer asked and answered exactly once per (teacher, prompt, sample): the retries wrote nothing twice
    assert sorted(set(chat.answered)) == sorted(chat.answered) and len(chat.answered) == 20
    for row in pool:
        model, prompt = row["teacher"], row["prompt"]
        assert row["completion"].startswith(f"{prompt} #") and (model, prompt, int(row["completion"].split("#")[1])) in chat.answered  # fmt: skip
    assert chat.peak["wide"] <= 3 and chat.peak["wide"] >= 2  # bounded, and concurrent
    starts = chat.starts["paced"]  # 25 requests/s: 40 ms apart on average (arrivals jitter by a few ms)
    assert (starts[-1] - starts[0]) / (len(starts) - 1) >= 0.038
    # a shard folder holds only finished shards: the answers sidecars are gone once their shard is written
    assert not [f for _, _, files in os.walk(tmp_path / "pool" / "shards") for f in files if "answers" in f]


def test_failed_requests_are_recorded_never_written_and_a_rerun_asks_only_them(chat, tmp_path):
    chat.broken = {PROMPTS[2]}
    teachers = [endpoint(chat, "t", max_retries=1)]
    with pytest.raises(PoolIncompleteError, match="failed.jsonl"):
        run(chat, tmp_path, teachers)
    shard_dir = tmp_path / "pool" / "shards" / "00-t"
    # prompts 2 and 3 share shard 1: it is not written, its failures are listed, its answered prompt is kept aside
    assert sorted(os.listdir(shard_dir)) == ["00000.jsonl", "00001.answers.jsonl", "00001.failed.jsonl", "00002.jsonl"]
    failed = [json.loads(line) for line in open(shard_dir / "00001.failed.jsonl")]
    assert sorted(f["key"] for f in failed) == ["0:0", "0:1"] and "HTTP 500" in failed[0]["error"]
    assert PROMPTS[2] not in (shard_dir / "00001.answers.jsonl").read_text()
    # a kill while appending leaves a cut line: that request is asked again, the others are not
    with open(shard_dir / "00001.answers.jsonl", "a") as f:
        f.write('{"key": "1:0", "cont')
    before = len(chat.answered)
    chat.broken = set()
    pool = run(chat, tmp_path, teachers)
    asked_again = chat.answered[before:]
    assert sorted(p for _, p, _ in asked_again) == [PROMPTS[2], PROMPTS[2]]
    assert len(pool) == len(PROMPTS) * 2 and sorted(set(pool["prompt"])) == PROMPTS
    assert not (shard_dir / "00001.failed.jsonl").exists()


def test_endpoint_spec_parsing_and_pool_identity():
    spec = TeacherSpec.parse("name=big,model=Qwen/Qwen2.5-72B-Instruct,base_url=http://h:8000/v1,max_concurrency=16")
    config = BuildPoolConfig(teachers=[spec], output_dir="x")
    resolved = config.teacher_specs[0]
    assert resolved.backend == "endpoint" and resolved.max_concurrency == 16 and resolved.timeout == 120.0
    # throughput knobs are not part of what the pool is: changing them on resume is allowed
    assert "max_concurrency" not in resolved.identity() and resolved.identity()["base_url"] == "http://h:8000/v1"
    local = BuildPoolConfig(teachers=["./m"], output_dir="x").teacher_specs[0]
    assert "base_url" not in local.identity()  # older manifests (without endpoint fields) still match
    with pytest.raises(ValueError, match="needs a `base_url`"):
        BuildPoolConfig(teachers=[{"model": "m", "backend": "endpoint"}], output_dir="x")
    with pytest.raises(ValueError, match="requests_per_second must be > 0"):
        BuildPoolConfig(teachers=[{"model": "m", "base_url": "http://h/v1", "requests_per_second": 0}], output_dir="x")


def test_pool_from_serve_teacher_loaded_by_its_command_line(tmp_path, tokenizer):
    """`serve-teacher` end to end: its command line loads a saved model, its chat endpoint answers a pool's
    requests, and a fixed seed gives the same answers twice."""
    from trl_distill.lab.world.models import tiny_model
    from trl_distill.scripts.serve_teacher import load_server, make_parser

    path = str(tmp_path / "teacher")
    tiny_model(tokenizer, "xs", "llama", seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    server = load_server(make_parser().parse_args([path, "--port", "0", "--device", "cpu"]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = {"name": "served", "model": path, "base_url": server.url, "max_new_tokens": 4, "temperature": 0.9}
        pools = [
            build_pool([spec], Dataset.from_dict({"prompt": PROMPTS[:3]}), str(tmp_path / f"pool{i}"), n=2,
                       verifier=always_right, show_progress=False)
            for i in range(2)
        ]  # fmt: skip
    finally:
        server.stop()
    assert len(pools[0]) == 6 and pools[0]["completion"] == pools[1]["completion"]
    assert all(0 < tokens <= 4 for tokens in pools[0]["completion_tokens"])
    assert server.requests["/chat/completions"] == 12
