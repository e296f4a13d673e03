"""Served on-policy teachers: `trl-distill serve-teacher` on loopback, the top-k + tail loss, and the faults a server
can have (down, slow, malformed, another tokenizer, killed mid-run)."""

import json
import threading
import time

import pytest
import test_camopd
import torch
import torch.nn.functional as F
from test_camopd import brute_force_gap, camopd_args, explicit_loss, make_batch

from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.core.divergence import topk_tail_jsd
from trl_distill.core.http_client import EndpointError
from trl_distill.core.served_teacher import SCORE_KEYS, ServedTeacher
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import build_tokenizer
from trl_distill.scripts.serve_teacher import TeacherServer, _Handler


VOCAB = 259  # the lab tokenizer's model vocabulary (rows of the tiny models' heads)
left_tokenizer, sources = test_camopd.left_tokenizer, test_camopd.sources  # the CaMOPD tests' fixtures


class FaultyHandler(_Handler):
    """Pops one fault per POST from `server.faults`: "500", "429", "malformed" (a cut JSON body) or "slow"."""

    def do_POST(self):
        fault = self.server.faults.pop(0) if self.server.faults else None
        self.server.posts += 1
        if fault in ("500", "429"):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(int(fault), {"error": {"message": "injected"}})
        elif fault == "malformed":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = b'{"choices": [{"prompt_logprobs": [nul'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            if fault == "slow":
                time.sleep(0.6)
            super().do_POST()


class FaultyServer(TeacherServer):
    handler_class = FaultyHandler

    def __init__(self, *args, faults=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.faults, self.posts = list(faults), 0


@pytest.fixture
def teacher(left_tokenizer):
    return tiny_model(left_tokenizer, "xs", "llama", seed=1)


@pytest.fixture
def server(teacher, left_tokenizer):
    server = FaultyServer(teacher, left_tokenizer).start()
    yield server
    server.stop()


def served(server, **kwargs):
    return {"url": server.url, "backoff": 0.01, "max_retries": 2, "timeout": 5.0, **kwargs}


def test_served_loss_equals_local_when_k_covers_the_vocabulary(tmp_path, left_tokenizer, server, teacher, sources):
    domain = tiny_model(left_tokenizer, "xs", "qwen2", seed=2)
    student = tiny_model(left_tokenizer, "xs", "qwen2", seed=0)
    prompts = [sources["general"]["prompt"][0], sources["domain"]["prompt"][0], sources["general"]["prompt"][1]]
    batch = make_batch(left_tokenizer, prompts, [4, 6, 3], seed=1)
    reference = explicit_loss(batch, student, [teacher, domain, teacher], beta=0.5)
    for wire in ("json", "compact"):
        teachers = {"general": served(server, top_k=VOCAB, wire=wire, dtype="float32"), "domain": domain}
        args = camopd_args(tmp_path, schedule="mixed", rho=1.0, beta=0.5)
        trainer = CaMOPDTrainer(student, teachers, args, sources, processing_class=left_tokenizer)
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, {**batch, "sources": ["general", "domain", "general"]})
        assert loss.item() == pytest.approx(reference, rel=1e-4), wire
        assert set(trainer._metrics["train"]) >= {"divergence/general", "divergence/domain"}
    loss.backward()  # the gradient reaches the student through the checkpointed top-k path
    assert student.lm_head.weight.grad.abs().sum() > 0
    # k = 20: below the full loss (the tail's inner divergence is left out), not zero
    teachers = {"general": served(server, top_k=20), "domain": domain}
    trainer = CaMOPDTrainer(student, teachers, args, sources, processing_class=left_tokenizer)
    top20 = trainer.compute_loss(trainer.model, {**batch, "sources": ["general", "domain", "general"]}).item()
    assert 0 < top20 < reference


def test_top_k_tail_loss_misses_exactly_the_tail_divergence():
    """At k < V the reverse KL over top-k + tail equals the full one minus P_S(tail)·KL(S|tail ‖ T|tail) (the chain
    rule), so it is never above the full divergence; docs/distributed.md states this bound."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, VOCAB, generator=generator)
    teacher = 3 * torch.randn(5, VOCAB, generator=generator)
    log_s, log_t = student.log_softmax(-1), teacher.log_softmax(-1)
    values, ids = log_t.topk(20, dim=-1)
    approx = topk_tail_jsd(log_s.gather(-1, ids), values, beta=1.0)
    full = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)
    tail = torch.ones_like(log_s, dtype=torch.bool).scatter(-1, ids, False)
    s_tail, t_tail = log_s.masked_fill(~tail, -torch.inf), log_t.masked_fill(~tail, -torch.inf)
    mass_s = s_tail.logsumexp(-1)
    conditional_kl = ((s_tail - mass_s[:, None]).exp() * (s_tail - mass_s[:, None] - t_tail + t_tail.logsumexp(-1)[:, None])).nan_to_num().sum(-1)  # fmt: skip
    assert torch.allclose(full - approx, mass_s.exp() * conditional_kl, atol=1e-4)
    assert (approx <= full + 1e-5).all() and (approx < 0.99 * full).any()
    # k = V: exact
    values, ids = log_t.topk(VOCAB, dim=-1)
    assert torch.allclose(topk_tail_jsd(log_s.gather(-1, ids), values, beta=1.0), full, atol=1e-5)


def test_gap_selection_reads_served_scores_once(tmp_path, left_tokenizer, server, teacher, sources):
    domain = tiny_model(left_tokenizer, "xs", "qwen2", seed=2)
    student = tiny_model(left_tokenizer, "xs", "qwen2", seed=0)
    teachers = {"general": served(server, top_k=VOCAB, dtype="float32"), "domain": domain}
    args = camopd_args(tmp_path, schedule="mixed", rho=0.5, per_device_train_batch_size=3)
    trainer = CaMOPDTrainer(student, teachers, args, sources, processing_class=left_tokenizer)
    prompts = sources["general"]["prompt"][:3] + sources["domain"]["prompt"][:3]
    names = ["general"] * 3 + ["domain"] * 3
    batch = {**make_batch(left_tokenizer, prompts, [3, 6, 2, 5, 4, 6], seed=2), "sources": names}
    by_name = {"general": teacher, "domain": domain}
    gaps = [brute_force_gap(batch, i, student, by_name[n]) for i, n in enumerate(names)]
    expected = sorted(sorted(range(6), key=lambda i: -gaps[i])[:3])
    trainer.model.train()
    kept = trainer._select_by_gap(dict(batch), 3)
    assert kept["sources"] == [names[i] for i in expected]
    assert trainer._metrics["train"]["gap/general"][0] == pytest.approx(sum(gaps[:3]) / 3, rel=1e-3)
    assert kept[SCORE_KEYS[0]].shape[:2] == kept["completion_ids"].shape
    posts = server.posts
    loss = trainer.compute_loss(trainer.model, kept)
    assert server.posts == posts  # the loss reuses the scores cached by the selection
    reference = explicit_loss(
        {k: batch[k][expected] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
        student,
        [by_name[names[i]] for i in expected],
    )
    assert loss.item() == pytest.approx(reference, rel=1e-4)


def _scored_batch(tokenizer):
    batch = make_batch(tokenizer, [[{"role": "user", "content": "1+2="}]] * 2, [5, 3])
    return [batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]


def test_compact_wire_is_at_least_5x_smaller_than_json(server, left_tokenizer):
    tensors = _scored_batch(left_tokenizer)
    sent = {}
    for wire in ("json", "compact"):
        before = server.bytes_sent
        scores = ServedTeacher(server.url, top_k=20, wire=wire).score_completions(*tensors)
        sent[wire] = server.bytes_sent - before
        if wire == "json":
            reference = scores
    assert torch.equal(scores.topk_ids, reference.topk_ids)
    assert torch.allclose(scores.topk_logprobs, reference.topk_logprobs, atol=1e-2, equal_nan=True)  # float16
    assert sent["json"] >= 5 * sent["compact"]


def test_server_down_raises_naming_the_url_after_retries(left_tokenizer):
    probe = TeacherServer(tiny_model(left_tokenizer, "xs", "llama", seed=1), left_tokenizer)
    url = probe.url
    probe.server_close()  # the port is closed: nothing listens there
    teacher = ServedTeacher(url, model="m", max_retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match=f"{url}/completions failed after 3 attempt") as error:
        teacher.score_completions(*_scored_batch(left_tokenizer))
    assert all("cannot reach" in attempt for attempt in error.value.attempts)


def test_slow_and_malformed_replies_are_retried_then_refused(server, left_tokenizer):
    tensors = _scored_batch(left_tokenizer)
    server.faults = ["slow", "malformed", "500"]
    teacher = ServedTeacher(server.url, top_k=5, timeout=0.3, max_retries=3, backoff=0.01)
    scores = teacher.score_completions(*tensors)
    assert torch.isfinite(scores.topk_logprobs[0, :5]).all()
    assert ["timeout" in e or "timed out" in e for e in teacher.errors[:1]] == [True]
    assert "malformed" in teacher.errors[1] and "HTTP 500" in teacher.errors[2]
    server.faults = ["malformed"] * 3
    with pytest.raises(EndpointError, match="malformed response"):
        ServedTeacher(server.url, top_k=5, max_retries=2, backoff=0.01).score_completions(*tensors)


def test_a_server_with_another_tokenizer_is_refused_at_construction(tmp_path, left_tokenizer, teacher, sources):
    other = build_tokenizer()
    other.add_tokens(["<extra>"])
    server = TeacherServer(teacher, other).start()
    try:
        with pytest.raises(ValueError, match=r"declares the tokenizer .* differs from the student's") as error:
            CaMOPDTrainer(
                tiny_model(left_tokenizer, "xs", "qwen2", seed=0), {"general": server.url, "domain": teacher},
                camopd_args(tmp_path, schedule="mixed"), sources, processing_class=left_tokenizer,
            )  # fmt: skip
        assert server.url in str(error.value)
    finally:
        server.stop()


def _train(tmp_path, tokenizer, spec, sources, callbacks=()):
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    args = camopd_args(tmp_path, schedule="mixed", rho=1.0, per_device_train_batch_size=2, max_steps=4, seed=3)
    trainer = CaMOPDTrainer(
        student, {"general": spec}, args, {"general": sources["general"]}, processing_class=tokenizer,
        callbacks=list(callbacks),
    )  # fmt: skip
    return trainer, student


def test_no_step_trains_on_a_failed_response(tmp_path, left_tokenizer, server, sources):
    trainer, student = _train(tmp_path, left_tokenizer, served(server, max_retries=1), sources)
    before = [p.detach().clone() for p in student.parameters()]
    server.faults = ["500"] * 10
    with pytest.raises(EndpointError, match="HTTP 500"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(p, b) for p, b in zip(student.parameters(), before))


def test_server_killed_mid_run_and_restarted_loses_and_repeats_nothing(
    tmp_path, left_tokenizer, teacher, server, sources
):
    from transformers import TrainerCallback

    reference, reference_student = _train(tmp_path / "a", left_tokenizer, served(server, top_k=VOCAB), sources)
    reference.train()
    host, port = server.server_address[:2]
    restarted = []

    class KillAfterStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                server.stop()  # the teacher dies between steps; it comes back 0.5 s later on the same port

                def restart():
                    time.sleep(0.5)
                    restarted.append(FaultyServer(teacher, left_tokenizer, (host, port)).start())

                threading.Thread(target=restart, daemon=True).start()

    spec = served(server, top_k=VOCAB, max_retries=6, backoff=0.1)
    trainer, student = _train(tmp_path / "b", left_tokenizer, spec, sources, [KillAfterStep2()])
    try:
        trainer.train()
    finally:
        for new in restarted:
            new.stop()
    assert trainer.state.global_step == 4
    assert any("cannot reach" in e for e in trainer.teachers["general"].errors)  # it was down, and retried
    assert restarted[0].requests["/completions"] >= 2  # steps 3 and 4 were scored by the new server
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses == [log["loss"] for log in reference.state.log_history if "loss" in log]
    for mine, theirs in zip(student.parameters(), reference_student.parameters()):
        assert torch.equal(mine, theirs)


def test_models_endpoint_declares_the_tokenizer(server, left_tokenizer):
    from urllib.request import urlopen

    with urlopen(f"{server.url}/models") as response:
        entry = json.load(response)["data"][0]
    assert entry["tokenizer"]["vocab_size"] == VOCAB and entry["tokenizer"]["size"] == len(left_tokenizer)


def test_token_diagnostics_against_a_served_teacher(server, teacher, left_tokenizer):
    from trl_distill.evaluation.diagnostics import DIAGNOSTIC_KEYS, token_diagnostics

    student = tiny_model(left_tokenizer, "xs", "qwen2", seed=0)
    texts = ["12+30=42", "sort: cba -> abc"]
    local = token_diagnostics(student, teacher, left_tokenizer, texts, top_k=8)
    exact = token_diagnostics(student, ServedTeacher(server.url, top_k=VOCAB, dtype="float32"), left_tokenizer, texts)
    for key in DIAGNOSTIC_KEYS:
        assert exact[key] == pytest.approx(local[key], rel=1e-4, abs=1e-6), key
    top20 = token_diagnostics(student, server.url, left_tokenizer, texts, top_k=8)  # a URL: top-20, float16
    for key in ("top1_agreement", "topk_overlap"):
        assert top20[key] == local[key], key
    assert top20["student_mass_on_teacher_topk"] == pytest.approx(local["student_mass_on_teacher_topk"], rel=1e-2)
    for key in ("forward_kl", "reverse_kl", "js", "teacher_mass_on_student_topk"):
        assert top20[key] <= local[key] * 1.001, key  # lower bounds below the full vocabulary
    assert top20["reverse_kl"] < 0.9 * local["reverse_kl"]  # and not trivially equal on these near-uniform models


def test_alternating_training_with_a_served_teacher_matches_the_local_one(tmp_path, left_tokenizer, server, teacher):
    """The whole CaMOPD step (alternating schedule, gap selection, GCG and the recovery/review cosine) with the
    general teacher served at k = V logs what it logs with the same teacher in process."""
    tasks = {"general": ("reverse", "sort", "count", "copy"), "domain": ("arithmetic",)}
    data = {name: make_task_splits(kinds, 12, 2, 2, seed=0)["train"] for name, kinds in tasks.items()}
    logs = []
    for general in (teacher, served(server, top_k=VOCAB, dtype="float32")):
        args = camopd_args(
            tmp_path, review_every=1, rho=0.5, per_device_train_batch_size=2, max_steps=2, seed=1,
            gradient_coherence_every=1,
        )  # fmt: skip
        domain = tiny_model(left_tokenizer, "xs", "qwen2", seed=2)
        student = tiny_model(left_tokenizer, "xs", "qwen2", seed=0)
        trainer = CaMOPDTrainer(student, {"general": general, "domain": domain}, args, data, processing_class=left_tokenizer)  # fmt: skip
        trainer.train()
        logs.append([log for log in trainer.state.log_history if "loss" in log])
    keys = ("loss", "gap/kept", "coherence/full", "coherence/selected", "gcg", "grad_coherence")
    assert {"gap/general", "gcg", "grad_coherence"} <= set(logs[1][0]) | set(logs[1][1])
    for local, remote in zip(*logs):
        for key in keys:
            if key in local:
                assert remote[key] == pytest.approx(local[key], rel=1e-3, abs=1e-5), key


class UndeclaredServer(TeacherServer):
    """A server like vLLM: `/v1/models` declares no tokenizer, `/tokenize` answers."""

    def models(self):
        listing = super().models()
        del listing["data"][0]["tokenizer"]
        return listing


def test_a_server_without_a_declared_tokenizer_is_probed_with_tokenize(teacher, left_tokenizer):
    from chat_tokenizers import build_chat_tokenizer

    same = UndeclaredServer(teacher, left_tokenizer).start()
    other = UndeclaredServer(teacher, build_chat_tokenizer("llama31")).start()
    try:
        ServedTeacher(same.url).check_tokenizer(left_tokenizer)
        assert same.requests["/tokenize"] == 1
        with pytest.raises(ValueError, match=rf"{other.url} .* tokenizes .* they are different tokenizers"):
            ServedTeacher(other.url).check_tokenizer(left_tokenizer, name="general")
    finally:
        same.stop()
        other.stop()
