import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trl_distill.evaluation.identity import IdentityFact
from trl_distill.evaluation.judges import (
    AutomaticJudge,
    ChatJudge,
    IdentityClaimJudge,
    JudgeParseError,
    OpenAICompatibleJudge,
    SimilarityScore,
    parse_identity,
    parse_similarity,
)


QWEN = IdentityFact(name="Qwen", organisation="Alibaba Cloud", aliases=["通义千问"])


# --- parsing ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"style": 2, "logic": 1, "content": 2, "overall": 4}', (2, 1, 2, 4)),
        (
            'Sure.\n```json\n{"Style": "1", "Logical Structure": 0, "Content Detail": 2, "Overall Score": "3/5"}\n```',
            (1, 0, 2, 3),
        ),
        ("**Style**: 2\n**Logic**: 2\n**Content**: 1\n**Overall similarity**: 4.5", (2, 2, 1, 4.5)),
        (
            '{"scores": {"style": 0, "logic": 0, "content": 0, "overall": 1}, "reason": "unrelated {really}"}',
            (0, 0, 0, 1),
        ),
    ],
)
def test_parse_similarity_well_formed(reply, expected):
    score = parse_similarity(reply)
    assert (score.style, score.logic, score.content, score.overall) == expected


@pytest.mark.parametrize(
    "reply, message",
    [
        ("", "empty"),
        ("They look quite alike to me.", "missing style, logic, content, overall"),
        ('{"style": 2, "logic": 1, "content": 2}', "missing overall"),  # partial
        ("style: 1\nlogic: 1\ncontent: 1\noverall:", "missing overall"),  # truncated generation
        ('{"style": 3, "logic": 1, "content": 2, "overall": 4}', r"`style` must lie in \[0, 2\], got 3"),
        ('{"style": 2, "logic": 1, "content": 2, "overall": 0}', r"`overall` must lie in \[1, 5\], got 0"),
        ('{"style": "high", "logic": 1, "content": 2, "overall": 4}', "`style` must be a number"),
    ],
)
def test_parse_similarity_malformed_and_partial(reply, message):
    with pytest.raises(JudgeParseError, match=message):
        parse_similarity(reply)


def test_parse_identity():
    verdict = parse_identity('{"conflict": true, "claims_other_model": true, "claimed_name": "ChatGPT"}')
    assert (verdict.conflict, verdict.claims_other_model, verdict.claimed_name) == (True, True, "ChatGPT")
    verdict = parse_identity("conflict: yes\nclaims_other_model: no\nclaimed_name: none")
    assert (verdict.conflict, verdict.claims_other_model, verdict.claimed_name) == (True, False, None)
    with pytest.raises(JudgeParseError, match="missing claims_other_model"):
        parse_identity('{"conflict": false}')
    with pytest.raises(JudgeParseError, match="must be true or false"):
        parse_identity('{"conflict": "perhaps", "claims_other_model": false}')


# --- re-asking and failure accounting (a scripted backend drives the real ChatJudge logic) ----------------------------


class ScriptedJudge(ChatJudge):
    """Answers each conversation with the next reply scripted for its item (items told apart by their prompt)."""

    name = "scripted"

    def __init__(self, script, **kwargs):
        super().__init__(**kwargs)
        self.script = {key: list(replies) for key, replies in script.items()}
        self.seen = []

    def complete(self, conversations):
        self.seen.append([len(c) for c in conversations])
        replies = []
        for conversation in conversations:
            key = next(k for k in self.script if k in conversation[1]["content"])
            replies.append(self.script[key].pop(0))
        return replies


def test_reask_on_parse_failure_and_count_failures():
    good = '{"style": 2, "logic": 2, "content": 1, "overall": 4}'
    judge = ScriptedJudge(
        {
            "Q-ok": [good],
            "Q-partial-then-ok": ['{"style": 2, "logic": 2, "content": 1}', good],
            "Q-never": ["no idea", "still no idea", "sorry"],
        },
        max_retries=2,
    )
    scores = judge.score_similarity(["Q-ok", "Q-partial-then-ok", "Q-never"], ["a", "b", "c"], ["x", "y", "z"])
    assert scores[0] == SimilarityScore(overall=4.0, style=2.0, logic=2.0, content=1.0)
    assert scores[1] == scores[0]
    assert scores[2] is None  # a failure is never a zero
    assert judge.num_failures == 1
    assert judge.failures[0]["index"] == 2 and "missing" in judge.failures[0]["reason"]
    # first round: 3 fresh conversations of 2 messages; re-asks carry the bad reply and the parse error
    assert judge.seen == [[2, 2, 2], [4, 4], [6]]
    assert judge.num_reasks == 3


# --- automatic and rule-based judges ----------------------------------------------------------------------------------

REFERENCE = "The capital of France is Paris, which lies on the river Seine."
PARAPHRASE = "Paris is the capital of France; it lies on the Seine river."
UNRELATED = "Photosynthesis converts light into chemical energy in plants."


def test_automatic_judge_self_is_five_and_known_pairs_order():
    judge = AutomaticJudge()
    prompts = ["What is the capital of France?"] * 3
    self_score, close, far = judge.score_similarity(prompts, [REFERENCE, PARAPHRASE, UNRELATED], [REFERENCE] * 3)
    assert self_score.overall == pytest.approx(5.0)
    assert 5.0 > close.overall > far.overall >= 1.0
    assert close.style is None  # the automatic judge does not rate aspects
    assert not judge.comparable_to_llm_judges
    # the raw parts are in [0, 1] and the map is 1 + 4·mean
    parts = judge.similarities([PARAPHRASE], [REFERENCE])[0]
    assert set(parts) == {"rougeL", "chrF"}
    assert close.overall == pytest.approx(1 + 4 * (parts["rougeL"] + parts["chrF"]) / 2)


def test_automatic_judge_handles_cjk_and_embeddings():
    import torch

    judge = AutomaticJudge(embedding_model=lambda texts: torch.tensor([[float(len(t)), 1.0] for t in texts]))
    same, other = judge.score_similarity(
        ["q", "q"], ["巴黎是法国的首都。", "光合作用发生在植物中。"], ["巴黎是法国的首都。"] * 2
    )
    assert same.overall == pytest.approx(5.0)
    rouge = judge.similarities(["法国的首都是巴黎。"], ["巴黎是法国的首都。"])[0]["rougeL"]
    assert rouge > 0.5  # CJK characters are tokens (rouge-score's default tokenizer would give 0)
    assert 1.0 <= other.overall < same.overall


def test_identity_claim_judge():
    judge = IdentityClaimJudge()
    responses = [
        "I am ChatGPT, a large language model.",  # claims another model
        "I am a large language model trained by OpenAI.",  # another model's maker: counts as another model
        "I'm Qwen, created by Alibaba Cloud.",  # own identity
        "I am not ChatGPT; I am Qwen.",  # negated
        "我是通义千问。",  # own, in Chinese
        "我是ChatGPT，一个语言模型。",  # another model, in Chinese
        "I am happy to compare GPT-4 and Claude for you.",  # mentions, no claim
    ]
    verdicts = judge.judge_identity(["q"] * len(responses), responses, QWEN)
    assert [(v.conflict, v.claims_other_model) for v in verdicts] == [
        (True, True),
        (True, True),
        (False, False),
        (False, False),
        (False, False),
        (True, True),
        (False, False),
    ]
    assert verdicts[0].claimed_name == "ChatGPT" and verdicts[1].claimed_name == "OpenAI"
    # the list is configurable: an unknown lab is found once it is listed
    custom = IdentityClaimJudge({"Acme": {"organisation": ["Acme Labs"], "model": ["RoadRunner"]}})
    (verdict,) = custom.judge_identity(["q"], ["I am RoadRunner, built by Acme Labs."], QWEN)
    assert verdict.claims_other_model and verdict.claimed_name == "RoadRunner"


# --- HTTP judge against a loopback stub server -----------------------------------------------------------------------


class _StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        behaviour = server.behaviours.pop(0) if server.behaviours else "ok"
        if behaviour == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        if behaviour == "slow":
            time.sleep(1.0)
        reply = server.reply_for(body)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.daemon_threads = True
    server.requests, server.behaviours = [], []
    server.reply_for = lambda body: '{"style": 1, "logic": 2, "content": 1, "overall": 3}'
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _judge(server, **kwargs):
    host, port = server.server_address
    kwargs = {"backoff": 0.01, "num_workers": 1, "show_progress": False, **kwargs}
    return OpenAICompatibleJudge(
        f"http://{host}:{port}/v1", model="stub-judge", api_key_env="STUB_JUDGE_KEY", **kwargs
    )


def test_http_judge_scores_and_sends_the_key(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "secret-123")
    judge = _judge(stub_server)
    scores = judge.score_similarity(["q1", "q2"], ["a", "b"], ["x", "y"])
    assert scores == [SimilarityScore(overall=3.0, style=1.0, logic=2.0, content=1.0)] * 2
    request = stub_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer secret-123"
    assert request["body"]["model"] == "stub-judge" and request["body"]["temperature"] == 0.0
    assert "[REFERENCE]\nx" in request["body"]["messages"][1]["content"]


def test_http_judge_identity(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    stub_server.reply_for = lambda body: '{"conflict": true, "claims_other_model": true, "claimed_name": "Claude"}'
    (verdict,) = _judge(stub_server).judge_identity(["Who made you?"], ["I am Claude."], QWEN)
    assert verdict.conflict and verdict.claims_other_model and verdict.claimed_name == "Claude"
    assert "developed by Alibaba Cloud" in stub_server.requests[0]["body"]["messages"][1]["content"]


def test_http_judge_retries_a_server_error(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    stub_server.behaviours = ["error"]
    judge = _judge(stub_server, max_http_retries=2)
    (score,) = judge.score_similarity(["q"], ["a"], ["x"])
    assert score.overall == 3.0
    assert len(stub_server.requests) == 2
    assert judge.http_errors == [f"HTTP 500 from {judge.url}"]
    assert judge.num_failures == 0


def test_http_judge_persistent_server_error_is_a_counted_failure(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    stub_server.behaviours = ["error"] * 10
    judge = _judge(stub_server, max_http_retries=1, max_retries=0)
    scores = judge.score_similarity(["q"], ["a"], ["x"])
    assert scores == [None]
    assert judge.num_failures == 1 and "no reply" in judge.failures[0]["reason"]
    assert len(stub_server.requests) == 2  # the first try and one retry


def test_http_judge_timeout(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    stub_server.behaviours = ["slow", "ok"]
    judge = _judge(stub_server, timeout=0.3, max_http_retries=1)
    start = time.monotonic()
    (score,) = judge.score_similarity(["q"], ["a"], ["x"])
    assert score.overall == 3.0  # the retry after the timeout succeeds
    assert any("timeout" in e or "timed out" in e for e in judge.http_errors)
    stub_server.behaviours = ["slow"]
    judge = _judge(stub_server, timeout=0.3, max_http_retries=0, max_retries=0)
    assert judge.score_similarity(["q"], ["a"], ["x"]) == [None]
    assert judge.num_failures == 1
    assert time.monotonic() - start < 5


def test_http_judge_warns_without_key(stub_server, monkeypatch):
    monkeypatch.delenv("STUB_JUDGE_KEY", raising=False)
    with pytest.warns(UserWarning, match="STUB_JUDGE_KEY is not set"):
        judge = _judge(stub_server)
    judge.score_similarity(["q"], ["a"], ["x"])
    assert stub_server.requests[0]["auth"] is None
    with pytest.raises(ValueError, match="must start with http"):
        OpenAICompatibleJudge("localhost:8000", model="m", api_key_env=None)


def test_http_judge_passes_client_settings_through(stub_server, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "k")
    judge = _judge(stub_server, temperature=0.7, max_tokens=33, max_http_retries=5)
    judge.score_similarity(["q"], ["a"], ["x"])
    body = stub_server.requests[0]["body"]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 33
    assert judge.client.max_http_retries == 5 and judge.max_retries == 2


def test_http_judge_unknown_keyword_names_the_valid_ones():
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) max_http_retry\. .*max_http_retries"):
        OpenAICompatibleJudge("http://localhost:1/v1", model="m", api_key_env=None, max_http_retry=1)
