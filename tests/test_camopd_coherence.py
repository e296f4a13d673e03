"""CaMOPD's gradient coherence gain (GCG) and the gap's temperature, against independent per-sample computations."""

import logging
import math

import pytest
import torch
from test_camopd import make_batch

import trl_distill.camopd.camopd_trainer as trainer_module
from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.camopd.coherence import (
    coherence,
    coherence_gain,
    coherence_module,
    coherence_parameters,
    per_sample_gradients,
    recorded_outputs,
)
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.tasks import make_task_splits
from trl_distill.lab.world.tokenizer import build_tokenizer


COMMON = {
    "bf16": False,
    "use_cpu": True,
    "report_to": [],
    "save_strategy": "no",
    "logging_steps": 1,
    "max_completion_length": 6,
}
TEMPERATURE = 0.7


def test_coherence_and_gain_by_hand():
    grads = torch.tensor([[3.0, 4.0], [-3.0, 4.0], [0.0, -2.0]])
    # Coh(all) = ‖(0, 6)‖ / (5 + 5 + 2) = 0.5;  Coh({0, 1}) = ‖(0, 8)‖ / 10 = 0.8;  GCG = (0.8 − 0.5) / 0.5 = 0.6
    assert coherence(grads).item() == pytest.approx(0.5)
    assert coherence(grads[[0, 1]]).item() == pytest.approx(0.8)
    assert coherence_gain(grads, [0, 1]).item() == pytest.approx(0.6)
    assert coherence(grads[[0]]).item() == pytest.approx(1.0)  # one sample always agrees with itself
    assert coherence_gain(grads, [1, 2]).item() == pytest.approx((math.hypot(-3, 2) / 7 - 0.5) / 0.5, rel=1e-5)


def _one_sample(batch, row, student, teacher):
    """Unpadded sample `row`: its gap at TEMPERATURE and the gradient of its summed reverse KL w.r.t. the final norm."""
    p = batch["prompt_ids"][row][batch["prompt_mask"][row] == 1]
    c = batch["completion_ids"][row][batch["completion_mask"][row] == 1]
    ids = torch.cat([p, c]).unsqueeze(0)
    log_s = (student(input_ids=ids).logits[0, len(p) - 1 : -1] / TEMPERATURE).log_softmax(-1)
    with torch.no_grad():
        log_t = (teacher(input_ids=ids).logits[0, len(p) - 1 : -1] / TEMPERATURE).log_softmax(-1)
    picked_s = log_s.gather(-1, c.unsqueeze(-1)).squeeze(-1)
    picked_t = log_t.gather(-1, c.unsqueeze(-1)).squeeze(-1)
    gap = (picked_t - picked_s).abs().mean().item()
    reverse_kl = (log_s.exp() * (log_s - log_t)).sum()  # Σ_t KL(S_t ‖ T_t): the sample's share of the loss
    (grad,) = torch.autograd.grad(reverse_kl, [student.model.norm.weight])
    return gap, grad.flatten()


def test_gcg_matches_per_sample_autograd_loop(tmp_path, monkeypatch):
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    general = make_task_splits(("reverse", "sort"), 8, 2, 2, seed=0)["train"]
    domain = make_task_splits(("arithmetic",), 8, 2, 2, seed=0)["train"]
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    teachers = {
        "general": tiny_model(tokenizer, "xs", "llama", seed=1),
        "domain": tiny_model(tokenizer, "xs", "qwen2", seed=2),
    }
    args = CaMOPDConfig(
        output_dir=str(tmp_path), **COMMON, schedule="mixed", rho=0.5, per_device_train_batch_size=2,
        gradient_coherence_every=1, temperature=TEMPERATURE,
    )  # fmt: skip
    trainer = CaMOPDTrainer(
        student, teachers, args, {"general": general, "domain": domain}, processing_class=tokenizer
    )
    assert [name for name, _ in coherence_parameters(student)] == ["model.norm.weight"]

    names = ["general", "domain", "general", "domain"]
    prompts = [general["prompt"][0], domain["prompt"][0], general["prompt"][1], domain["prompt"][1]]
    batch = {**make_batch(tokenizer, prompts, [3, 6, 5, 2], seed=3), "sources": names}
    trainer.model.train()
    recorded = []  # the norm outputs each micro-batch hands to per_sample_gradients (one: the through-module path)
    real = trainer_module.per_sample_gradients
    monkeypatch.setattr(
        trainer_module, "per_sample_gradients", lambda *a: recorded.append(len(a[2]) if a[2] else 0) or real(*a)
    )
    trainer._select_by_gap(dict(batch), 2)  # B = 2 kept of the 4 generated; per-sample gradients in micro-batches of 2
    assert recorded == [1, 1]
    metrics = trainer._metrics["train"]

    samples = [_one_sample(batch, i, student, teachers[n]) for i, n in enumerate(names)]
    gaps = [g for g, _ in samples]
    grads = [g for _, g in samples]
    kept = sorted(sorted(range(4), key=lambda i: -gaps[i])[:2])

    def coh(rows):  # ‖Σ g_i‖ / Σ ‖g_i‖ in plain Python
        total = [sum(grads[i][k].item() for i in rows) for k in range(grads[0].numel())]
        return math.sqrt(sum(x * x for x in total)) / sum(
            math.sqrt(sum(x.item() ** 2 for x in grads[i])) for i in rows
        )

    # the gap is taken at the loss temperature
    assert metrics["gap/general"][0] == pytest.approx((gaps[0] + gaps[2]) / 2, rel=1e-4)
    assert metrics["gap/domain"][0] == pytest.approx((gaps[1] + gaps[3]) / 2, rel=1e-4)
    full, selected = coh(range(4)), coh(kept)
    assert abs(selected - full) > 1e-3  # selection changes the coherence on this batch: the check can fail
    assert metrics["coherence/full"][0] == pytest.approx(full, rel=1e-3)
    assert metrics["coherence/selected"][0] == pytest.approx(selected, rel=1e-3)
    assert metrics["gcg"][0] == pytest.approx((selected - full) / full, rel=1e-3, abs=1e-5)
    assert metrics["coherence/seconds"][0] > 0
    assert all(p.grad is None for p in student.parameters())  # a diagnostic: nothing accumulated for the optimizer


def test_gcg_only_every_n_steps_and_only_with_selection(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    data = make_task_splits(("reverse",), 8, 2, 2, seed=0)["train"]
    student, teacher = tiny_model(tokenizer, "xs", "qwen2", seed=0), tiny_model(tokenizer, "xs", "llama", seed=1)
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, rho=0.5, per_device_train_batch_size=2,
                        gradient_coherence_every=2)  # fmt: skip
    trainer = CaMOPDTrainer(student, teacher, args, data, processing_class=tokenizer)
    batch = {**make_batch(tokenizer, data["prompt"][:4], [3, 4, 5, 2], seed=0), "sources": ["default"] * 4}
    trainer.model.train()
    trainer.state.global_step = 1
    trainer._select_by_gap(dict(batch), 2)
    assert "gcg" not in trainer._metrics["train"]  # step 1 of every 2: not logged
    trainer.state.global_step = 2
    trainer._select_by_gap(dict(batch), 2)
    assert len(trainer._metrics["train"]["gcg"]) == 1


def _per_sample_losses(model, ids):
    """`(N,)` losses, row i from sample i only: the summed log-likelihood of each sample's next tokens."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)


@pytest.mark.parametrize("use_peft", [False, True])
def test_per_sample_gradients_through_the_module_equal_one_backward_per_sample(use_peft):
    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    if use_peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
        model = get_peft_model(model, lora)
    named = coherence_parameters(model)
    assert ("lora_B" in named[0][0]) == use_peft  # the last LoRA matrix with PEFT, else the final norm
    module = coherence_module(model)
    assert [id(p) for _, p in named] == [id(p) for p in module.parameters()]  # the module owns exactly those
    params = [p for _, p in named]
    ids = torch.randint(3, 259, (3, 7), generator=torch.Generator().manual_seed(0))
    brute = torch.stack(
        [torch.cat([g.flatten() for g in torch.autograd.grad(_per_sample_losses(model, ids[i : i + 1])[0], params)])
         for i in range(3)]
    )  # fmt: skip
    head_backwards = []
    model.get_output_embeddings().register_full_backward_hook(lambda *_: head_backwards.append(1))

    loop = per_sample_gradients(_per_sample_losses(model, ids), params)  # no outputs: a backward per sample
    assert len(head_backwards) == 3
    with recorded_outputs(module) as outputs:
        losses = _per_sample_losses(model, ids)
    through_module = per_sample_gradients(losses, params, outputs)
    assert len(head_backwards) == 4  # the head back-propagated once for the three samples
    assert brute.abs().max() > 0
    torch.testing.assert_close(loop, brute, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(through_module, brute, rtol=1e-4, atol=1e-6)
    # a module that ran twice cannot be split per sample: the loop is used, with the same result
    with recorded_outputs(module) as outputs:
        losses = _per_sample_losses(model, ids)
        _per_sample_losses(model, ids)
    torch.testing.assert_close(per_sample_gradients(losses, params, outputs), brute, rtol=1e-4, atol=1e-6)
    assert len(head_backwards) == 7


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_diagnostics_of_a_lora_student_under_gradient_checkpointing(
    tmp_path, monkeypatch, caplog, use_reentrant
):
    """Non-re-entrant checkpointing (transformers' default): the LoRA GCG equals the per-sample loop. Re-entrant:
    `torch.autograd.grad` cannot reach a checkpointed layer's parameters, so the diagnostics say so and log nothing
    (they logged zeros and a NaN gain before)."""
    from peft import LoraConfig

    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    data = make_task_splits(("reverse",), 8, 2, 2, seed=0)["train"]
    student, teacher = tiny_model(tokenizer, "xs", "qwen2", seed=0), tiny_model(tokenizer, "xs", "llama", seed=1)
    checkpointing = {"use_reentrant": use_reentrant}
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, rho=0.5, per_device_train_batch_size=2,
                        gradient_coherence_every=1, gradient_checkpointing=True,
                        gradient_checkpointing_kwargs=checkpointing)  # fmt: skip
    lora = LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    with caplog.at_level(logging.WARNING, logger="trl_distill.camopd.camopd_trainer"):
        trainer = CaMOPDTrainer(student, teacher, args, data, processing_class=tokenizer, peft_config=lora)
    warned = [r.getMessage() for r in caplog.records if "gradient_coherence_every is ignored" in r.getMessage()]
    assert len(warned) == int(use_reentrant) and all("use_reentrant': False" in w for w in warned)
    trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)  # as train() does
    trainer.model.train()
    real, compared = trainer_module.per_sample_gradients, []

    def both(losses, params, outputs):
        through_module, loop = real(losses, params, outputs), real(losses, params)
        compared.append((through_module, loop))
        return through_module

    monkeypatch.setattr(trainer_module, "per_sample_gradients", both)
    batch = {**make_batch(tokenizer, data["prompt"][:4], [3, 4, 5, 2], seed=0), "sources": ["default"] * 4}
    trainer._select_by_gap(dict(batch), 2)
    if use_reentrant:
        assert compared == [] and "gcg" not in trainer._metrics["train"]
        return
    assert len(compared) == 2 and all(loop.abs().max() > 0 for _, loop in compared)
    for through_module, loop in compared:
        torch.testing.assert_close(through_module, loop)
    assert math.isfinite(trainer._metrics["train"]["gcg"][0])
