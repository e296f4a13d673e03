import math

import pytest
import torch
from transformers import Trainer, TrainingArguments

from trl_distill.evaluation.diagnostics import (
    DIAGNOSTIC_KEYS,
    TokenDiagnosticsCallback,
    per_token_diagnostics,
    token_diagnostics,
)
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tokenizer import build_tokenizer


TEXTS = ["The cat sat on the mat.", "Paris is the capital of France, on the Seine.", "2 + 2 = 4"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    return tiny_model(tokenizer, "xs", seed=0).eval(), tiny_model(tokenizer, "xs", seed=1).eval()


def brute_force(student, teacher, tokenizer, texts, k):
    """Independent computation in plain Python floats: one text at a time, no padding, explicit vocabulary sums."""
    rows = {key: [] for key in ("fkl", "rkl", "js", "top1", "t_on_s")}
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            all_zs = student(input_ids=ids).logits[0, :-1].double().tolist()
            all_zt = teacher(input_ids=ids).logits[0, :-1].double().tolist()
        for zs, zt in zip(all_zs, all_zt):
            norm_s, norm_t = sum(math.exp(z) for z in zs), sum(math.exp(z) for z in zt)
            ps, pt = [math.exp(z) / norm_s for z in zs], [math.exp(z) / norm_t for z in zt]
            m = [0.5 * (a + b) for a, b in zip(ps, pt)]
            rows["fkl"].append(sum(b * math.log(b / a) for a, b in zip(ps, pt)))
            rows["rkl"].append(sum(a * math.log(a / b) for a, b in zip(ps, pt)))
            js_t = sum(b * math.log(b / c) for b, c in zip(pt, m))
            js_s = sum(a * math.log(a / c) for a, c in zip(ps, m))
            rows["js"].append(0.5 * js_t + 0.5 * js_s)
            rows["top1"].append(float(zs.index(max(zs)) == zt.index(max(zt))))
            top_s = sorted(range(len(ps)), key=lambda v: -ps[v])[:k]
            rows["t_on_s"].append(sum(pt[v] for v in top_s))
    return {key: sum(v) / len(v) for key, v in rows.items()}, len(rows["fkl"])


def test_token_diagnostics_match_brute_force(tokenizer, models):
    student, teacher = models
    stats = token_diagnostics(student, teacher, tokenizer, TEXTS, batch_size=2, top_k=5)
    expected, n = brute_force(student, teacher, tokenizer, TEXTS, k=5)
    assert stats["num_tokens"] == n
    assert stats["forward_kl"] == pytest.approx(expected["fkl"], abs=1e-5)
    assert stats["reverse_kl"] == pytest.approx(expected["rkl"], abs=1e-5)
    assert stats["js"] == pytest.approx(expected["js"], abs=1e-5)
    assert stats["top1_agreement"] == pytest.approx(expected["top1"], abs=1e-9)
    assert stats["teacher_mass_on_student_topk"] == pytest.approx(expected["t_on_s"], abs=1e-5)
    # random models disagree, so the numbers are informative, not degenerate
    assert stats["forward_kl"] > 1e-3 and 0 < stats["js"] < math.log(2)


def test_batching_does_not_change_results(tokenizer, models):
    student, teacher = models
    one = token_diagnostics(student, teacher, tokenizer, TEXTS, batch_size=1, return_per_token=True)
    all_ = token_diagnostics(student, teacher, tokenizer, TEXTS, batch_size=3, return_per_token=True)
    for key in DIAGNOSTIC_KEYS:
        assert one[key] == pytest.approx(all_[key], abs=1e-6)
    lengths = [len(tokenizer(t)["input_ids"]) - 1 for t in TEXTS]
    assert [len(row["js"]) for row in all_["per_token"]] == lengths


def test_identical_models_agree_perfectly(tokenizer, models):
    student, _ = models
    stats = token_diagnostics(student, student, tokenizer, TEXTS, top_k=3)
    assert stats["forward_kl"] == pytest.approx(0.0, abs=1e-6)
    assert stats["reverse_kl"] == pytest.approx(0.0, abs=1e-6)
    assert stats["js"] == pytest.approx(0.0, abs=1e-6)
    assert stats["top1_agreement"] == 1.0
    assert stats["topk_overlap"] == 1.0


def test_completion_only_scoring(tokenizer, models):
    student, teacher = models
    stats = token_diagnostics(student, teacher, tokenizer, [" blue."], prompts=["The sky is"])
    # the completion " blue." plus the EOS appended to plain completions
    assert stats["num_tokens"] == len(" blue.") + 1


def test_per_token_diagnostics_on_hand_made_logits():
    # teacher is certain of token 0; the student mildly prefers token 0: p_S(0) = e / (e + 3)
    teacher = torch.tensor([[50.0, 0.0, 0.0, 0.0]])
    student = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    values = per_token_diagnostics(student, teacher, top_k=1)
    p_s0 = math.e / (math.e + 3)
    assert values["forward_kl"].item() == pytest.approx(-math.log(p_s0), abs=1e-5)
    assert values["top1_agreement"].item() == 1.0
    assert values["teacher_mass_on_student_topk"].item() == pytest.approx(1.0, abs=1e-5)
    assert values["student_mass_on_teacher_topk"].item() == pytest.approx(p_s0, abs=1e-6)


def test_errors_name_the_problem(tokenizer, models):
    student, _ = models
    other = tiny_model(tokenizer, "xs", seed=2, vocab_size=len(tokenizer) - 10).eval()
    with pytest.raises(ValueError, match="ids 249..258 cannot be embedded"):
        token_diagnostics(student, other, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="`prompts` has 1 entries"):
        token_diagnostics(student, student, tokenizer, TEXTS, prompts=["x"])
    with pytest.raises(TypeError, match="wrap it"):
        token_diagnostics(student, student, tokenizer, "a text")


def test_a_teacher_saved_with_another_tokenizer_is_refused(tokenizer, models, tmp_path):
    """Same vocabulary size, two ids swapped: comparing logits id by id would give numbers that mean nothing (a
    Gemma-3 teacher against a SmolLM2 student gave KL 10.5 and top-1 agreement 0 without a word)."""
    from test_core_teachers import byte_tokenizer
    from transformers import AutoModelForCausalLM

    student, teacher = models
    teacher.save_pretrained(tmp_path / "teacher")
    byte_tokenizer(swap=(40, 41)).save_pretrained(tmp_path / "teacher")
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")
    with pytest.raises(ValueError, match="2 token ids differ"):
        token_diagnostics(student, saved, tokenizer, TEXTS)
    with pytest.raises(ValueError, match="2 token ids differ"):
        TokenDiagnosticsCallback(saved, tokenizer, TEXTS)
    tokenizer.save_pretrained(tmp_path / "teacher")  # its own tokenizer: accepted, and scored as the original
    accepted = token_diagnostics(student, AutoModelForCausalLM.from_pretrained(tmp_path / "teacher"), tokenizer, TEXTS)
    expected, n = brute_force(student, teacher, tokenizer, TEXTS, k=1)
    assert accepted["num_tokens"] == n and accepted["js"] == pytest.approx(expected["js"], abs=1e-5)


class _TextDataset(torch.utils.data.Dataset):
    def __init__(self, tokenizer, texts):
        self.items = [tokenizer(t)["input_ids"] for t in texts]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        ids = torch.tensor(self.items[i])
        return {"input_ids": ids, "labels": ids.clone()}


def test_callback_logs_every_n_steps(tokenizer, models, cpu_training_args):
    _, teacher = models
    student = tiny_model(tokenizer, "xs", seed=0).eval()
    args = cpu_training_args(
        TrainingArguments, per_device_train_batch_size=1, max_steps=3, learning_rate=1e-2, logging_steps=100
    )
    trainer = Trainer(model=student, args=args, train_dataset=_TextDataset(tokenizer, TEXTS * 2))
    callback = TokenDiagnosticsCallback(teacher, tokenizer, TEXTS[:2], log_every=2, trainer=trainer, top_k=4)
    trainer.add_callback(callback)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "diagnostics/forward_kl" in row]
    assert [row["step"] for row in logged] == [0, 2]
    assert all(set(f"diagnostics/{k}" for k in DIAGNOSTIC_KEYS) <= set(row) for row in logged)
    # training moves the student, so the logged divergence changes
    assert logged[0]["diagnostics/forward_kl"] != pytest.approx(logged[-1]["diagnostics/forward_kl"], abs=1e-6)


def test_callback_without_trainer_writes_log_history(tokenizer, models):
    from transformers import TrainerState

    student, teacher = models
    callback = TokenDiagnosticsCallback(teacher, tokenizer, TEXTS[:1], log_every=5, prefix="kd/")
    state = TrainerState()
    for step in (3, 5, 5):  # step 3 is skipped; step 5 is logged once even if the hook fires twice
        state.global_step = step
        callback.on_step_end(None, state, None, model=student)
    assert [row["step"] for row in state.log_history] == [5]
    expected, _ = brute_force(student, teacher, tokenizer, TEXTS[:1], k=1)
    assert state.log_history[0]["kd/js"] == pytest.approx(expected["js"], abs=1e-5)
