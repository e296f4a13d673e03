"""CaMOPD's gradient coherence gain (GCG) and the gap's temperature, against independent per-sample computations."""

import json
import logging
import math
import os

import pytest
import torch
from test_camopd import make_batch

import trl_distill.camopd.coherence as coherence_py
from trl_distill.camopd.camopd_config import CaMOPDConfig
from trl_distill.camopd.camopd_trainer import CaMOPDTrainer
from trl_distill.camopd.coherence import (
    coherence,
    coherence_gain,
    coherence_module,
    coherence_parameters,
    gradient_coherence,
    per_sample_gradients,
    recorded_outputs,
    streamed_gradient_coherence,
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


def two_source_world():
    """A left-padding tokenizer, general and domain prompts, a Qwen2 student and a teacher per source."""
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    general = make_task_splits(("reverse", "sort"), 8, 2, 2, seed=0)["train"]
    domain = make_task_splits(("arithmetic",), 8, 2, 2, seed=0)["train"]
    student = tiny_model(tokenizer, "xs", "qwen2", seed=0)
    teachers = {
        "general": tiny_model(tokenizer, "xs", "llama", seed=1),
        "domain": tiny_model(tokenizer, "xs", "qwen2", seed=2),
    }
    return tokenizer, general, domain, student, teachers


def test_gcg_matches_per_sample_autograd_loop(tmp_path, monkeypatch):
    tokenizer, general, domain, student, teachers = two_source_world()
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
    real = coherence_py.per_sample_gradients
    monkeypatch.setattr(
        coherence_py, "per_sample_gradients", lambda *a: recorded.append(len(a[2]) if a[2] else 0) or real(*a)
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


def test_logged_recovery_review_cosine_is_the_cosine_of_the_two_flattened_gradients(tmp_path):
    tokenizer, general, domain, student, teachers = two_source_world()
    args = CaMOPDConfig(output_dir=str(tmp_path), **COMMON, per_device_train_batch_size=2, gradient_coherence_every=1)
    trainer = CaMOPDTrainer(
        student, teachers, args, {"general": general, "domain": domain}, processing_class=tokenizer
    )
    batches = {
        name: {**make_batch(tokenizer, data["prompt"][:2], [3, 5], seed=seed), "sources": [name] * 2}
        for seed, (name, data) in enumerate((("general", general), ("domain", domain)))
    }
    params = [p for p in student.parameters() if p.requires_grad]
    recovery, review = (_flat_gradient(trainer._compute_loss(student, batches[n], None)[0], params) for n in batches)
    trainer._latest_batches = batches
    trainer._log_gradient_coherence()
    assert trainer._metrics["train"]["grad_coherence"] == [pytest.approx(_cosine(recovery, review), rel=1e-4)]
    assert all(p.grad is None for p in student.parameters())


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
    real, compared = coherence_py.per_sample_gradients, []

    def both(losses, params, outputs):
        through_module, loop = real(losses, params, outputs), real(losses, params)
        compared.append((through_module, loop))
        return through_module

    monkeypatch.setattr(coherence_py, "per_sample_gradients", both)
    batch = {**make_batch(tokenizer, data["prompt"][:4], [3, 4, 5, 2], seed=0), "sources": ["default"] * 4}
    trainer._select_by_gap(dict(batch), 2)
    if use_reentrant:
        assert compared == [] and "gcg" not in trainer._metrics["train"]
        return
    assert len(compared) == 2 and all(loop.abs().max() > 0 for _, loop in compared)
    for through_module, loop in compared:
        torch.testing.assert_close(through_module, loop)
    assert math.isfinite(trainer._metrics["train"]["gcg"][0])


# ------------------------------------------------------------------ the recovery/review cosine, streamed
def _lm_loss(model, ids):
    return torch.nn.functional.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())


def _flat_gradient(loss, params) -> torch.Tensor:
    """The whole gradient as one float64 vector (zeros where the loss does not reach): the brute force."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).double().flatten() for g, p in zip(grads, params)])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a @ b).item() / math.sqrt((a @ a).item() * (b @ b).item())


def _streamed_case():
    """A tiny LM with tied embeddings (one parameter, two uses) and three extra parameters: one only the recovery
    loss reaches, one only the review loss reaches, one neither; two random batches."""
    tokenizer = build_tokenizer()
    model = tiny_model(tokenizer, "xs", "qwen2", seed=0, tie_word_embeddings=True)
    generator = torch.Generator().manual_seed(0)
    only_a, only_b, neither = (torch.nn.Parameter(torch.randn(5, generator=generator)) for _ in range(3))
    ids_a, ids_b = (torch.randint(3, len(tokenizer), (2, 9), generator=generator) for _ in range(2))
    params = [*model.parameters(), only_a, only_b, neither]

    def recovery():
        return _lm_loss(model, ids_a) + (only_a**2).sum()

    def review():
        return _lm_loss(model, ids_b) + 3 * only_b.sum()

    return model, params, recovery, review


def test_streamed_cosine_equals_the_cosine_of_the_flattened_gradients():
    model, params, recovery, review = _streamed_case()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    brute = _cosine(_flat_gradient(recovery(), params), _flat_gradient(review(), params))
    assert abs(brute) > 1e-3  # a cosine far from 0, which a wrong sum would miss

    assert streamed_gradient_coherence(recovery, review, params).item() == pytest.approx(brute, rel=1e-5)
    # the parameters only one loss reaches count (in one norm each): leaving them out changes the number
    assert streamed_gradient_coherence(recovery, review, params[:-3]).item() != pytest.approx(brute, rel=1e-3)
    assert all(p.grad is None for p in params)  # a diagnostic: nothing accumulated for the optimizer
    # the hooks are gone: autograd hands back real gradients again
    (grad,) = torch.autograd.grad(review(), [params[0]])
    assert grad.stride() != (0, 0) and grad.abs().max() > 0
    # and the flat-vector form is the same cosine
    flat_a, flat_b = _flat_gradient(recovery(), params), _flat_gradient(review(), params)
    assert gradient_coherence(flat_a.float(), flat_b.float()).item() == pytest.approx(brute, rel=1e-5)


def test_streamed_cosine_all_reduced_over_two_gloo_ranks_equals_the_one_process_cosine(tmp_path):
    """FSDP-like ranks (each owns a piece of the flat parameters, cut inside a weight) get, with `sharded=True`, the
    cosine of the whole gradient; DDP-like ranks (all parameters, their own batches) with `sharded=False` each get the
    cosine of their own gradients. Both against one-process brute force."""
    import subprocess
    import sys

    from multiprocess_coherence import SHARDED_BATCHES, batch, lm_loss, model, replicated_batches, shard_bounds

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [os.path.join(root, "tests", "multiprocess_coherence.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    net = model()
    params = list(net.parameters())
    recovery, review = (_flat_gradient(lm_loss(net, batch(seed)), params) for seed in SHARDED_BATCHES)
    whole = _cosine(recovery, review)
    for rank in ranks:
        assert rank["sharded"] == pytest.approx(whole, rel=1e-5)
        start, end = shard_bounds(recovery.numel(), rank["rank"])
        piece = _cosine(recovery[start:end], review[start:end])
        assert rank["shard_only"] == pytest.approx(piece, rel=1e-5)  # what one rank sees alone
        own = _cosine(
            *(_flat_gradient(lm_loss(net, batch(seed)), params) for seed in replicated_batches(rank["rank"]))
        )
        assert rank["replicated"] == pytest.approx(own, rel=1e-5)
    assert ranks[0]["replicated"] != pytest.approx(ranks[1]["replicated"], rel=1e-3)  # not one mixed number
    assert ranks[0]["shard_only"] != pytest.approx(ranks[1]["shard_only"], rel=0.05)  # pieces alone disagree


def _peak_bytes(fn) -> int:
    """Peak of the CPU bytes allocated while `fn` runs, above what was allocated when it started (the profiler's
    record of every allocation and free)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def test_streamed_cosine_holds_one_gradient_where_flattening_held_several():
    """Peak extra memory of the cosine: one backward alone (activations + one gradient) is the floor; the streamed
    cosine stays within one parameter of it, the flattened one (the code before) held about three gradients more.
    Run with `-s` to see the numbers (docs/camopd.md quotes them)."""
    model, params, recovery, review = _streamed_case()
    gradient = sum(p.numel() * p.element_size() for p in params)
    largest = max(p.numel() * p.element_size() for p in params)

    def flattened():  # the code this replaced: each gradient flattened, then the cosine of the two vectors
        flat = []
        for loss in (recovery, review):
            grads = torch.autograd.grad(loss(), params, allow_unused=True)
            flat.append(
                torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
            )
        return torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0, eps=1e-12)

    one_backward = _peak_bytes(lambda: torch.autograd.grad(review(), params, allow_unused=True))
    peaks = {
        "flattened": _peak_bytes(flattened),
        "streamed": _peak_bytes(lambda: streamed_gradient_coherence(recovery, review, params)),
    }
    mib = 2**20
    print(
        f"\n|θ| = {sum(p.numel() for p in params):,} fp32 parameters, one gradient = {gradient / mib:.2f} MiB; "
        f"one backward alone peaks at {one_backward / mib:.2f} MiB"
    )
    for name, peak in peaks.items():
        print(
            f"{name:>10}: peak {peak / mib:.2f} MiB = one backward + {(peak - one_backward) / gradient:.2f} gradients"
        )
    assert peaks["streamed"] <= one_backward + 2 * largest
    assert peaks["flattened"] >= one_backward + 2.5 * gradient
