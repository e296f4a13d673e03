"""SCAS learning cost: the batched scorer against a brute-force batch-1 computation with explicit cosine matrices."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from trl_distill.core.logprobs import encode_prompt_completion
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.toys import toy_pool
from trl_distill.scas.scoring import learning_cost, resolve_feature_module, scas_scores


def brute_force_cost(model, tokenizer, prompt, completion, up_proj, lmbda=0.5):
    """SCAS as the official code states it: one sequence, full logits, T×T cosine blocks over A×A and A×Q."""
    enc = encode_prompt_completion(tokenizer, prompt, completion)
    ids = torch.tensor([enc["input_ids"]])
    captured = []
    handle = up_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    handle.remove()
    nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]  # nll[t-1] = ℓ_t
    special = set(tokenizer.all_special_ids)
    A = [t for t in range(1, ids.shape[1]) if enc["completion_mask"][t] and ids[0, t].item() not in special]
    Q = [t for t in range(1, ids.shape[1]) if not enc["completion_mask"][t] and ids[0, t].item() not in special]
    u = captured[0][0].double()
    cos = (u @ u.T) / (u.norm(dim=-1)[:, None] * u.norm(dim=-1)[None, :])
    d_A = nll[[t - 1 for t in A]].mean()
    d_Q = nll[[t - 1 for t in Q]].mean()
    AA = cos[A][:, A].mean()
    AQ = cos[A][:, Q].mean()
    S = (1 - lmbda) * d_A**2 * AA + lmbda * d_A * d_Q * AQ
    return {"learning_cost": S.item(), "d_A": d_A.item(), "d_Q": d_Q.item(), "AA": AA.item(), "AQ": AQ.item()}


@pytest.fixture(scope="module")
def pool():
    return toy_pool(num_prompts=3, styles=("cot", "terse", "verbose"))


def _long_rows(pool):
    from trl_distill.core.pool import to_long_pool

    long = to_long_pool(pool)
    return list(zip(long["prompt"], long["completion"]))


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_learning_cost_matches_brute_force(tokenizer, pool, arch):
    model = tiny_model(tokenizer, "xs", arch, seed=3)
    scores = scas_scores(model, tokenizer, pool, lmbda=0.3, batch_size=5)
    up_proj = model.model.layers[-1].mlp.up_proj
    rows = _long_rows(pool)
    assert len(scores) == len(rows) == 12
    for score, (prompt, completion) in zip(scores, rows):
        expected = brute_force_cost(model, tokenizer, prompt, completion, up_proj, lmbda=0.3)
        for key, value in expected.items():
            assert score[key] == pytest.approx(value, abs=1e-4), key
    # the costs differ between candidates, so the comparison above is not trivially satisfied
    assert len({round(s["learning_cost"], 4) for s in scores}) > 6


def test_learning_cost_formula_by_hand():
    # (1-λ)·d_A²·AA + λ·d_A·d_Q·AQ with d_A=2, d_Q=3, AA=0.5, AQ=0.25, λ=0.5: 0.5·4·0.5 + 0.5·2·3·0.25 = 1.75
    value = learning_cost(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(0.5), torch.tensor(0.25), 0.5)
    assert value.item() == pytest.approx(1.75)
    assert learning_cost(2.0, 3.0, 0.5, 0.25, 0.0) == pytest.approx(2.0)  # λ=0: answer–answer term only


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_unbatched(tokenizer, pool, tiny_student, padding_side):
    # the pool mixes short (terse) and long (verbose) answers, so every batch is padded
    single = scas_scores(tiny_student, tokenizer, pool, batch_size=1)
    batched = scas_scores(tiny_student, tokenizer, pool, batch_size=7, padding_side=padding_side)
    lengths = {s["num_answer_tokens"] for s in single}
    assert len(lengths) > 2
    for a, b in zip(single, batched):
        assert a["num_answer_tokens"] == b["num_answer_tokens"]
        for key in ("learning_cost", "d_A", "d_Q", "AA", "AQ"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_batch_composition_does_not_matter(tokenizer, pool, tiny_student):
    full = scas_scores(tiny_student, tokenizer, pool, batch_size=4)
    alone = scas_scores(tiny_student, tokenizer, pool.select([1]), batch_size=4)
    assert [s["learning_cost"] for s in alone] == pytest.approx([s["learning_cost"] for s in full[4:8]], abs=1e-5)


def test_scoring_is_forward_only_and_restores_mode(tokenizer, pool, tiny_student):
    tiny_student.train()
    before = [p.detach().clone() for p in tiny_student.parameters()]
    scas_scores(tiny_student, tokenizer, pool, batch_size=4)
    assert tiny_student.training
    assert all(p.grad is None for p in tiny_student.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_student.parameters()))


def test_peft_model_scores_with_adapter(tokenizer, pool, tiny_student):
    base = scas_scores(tiny_student, tokenizer, pool, batch_size=6)
    peft_model = get_peft_model(
        tiny_student, LoraConfig(r=4, target_modules=["up_proj", "q_proj"], init_lora_weights=False)
    )
    module = resolve_feature_module(peft_model)
    assert module is peft_model.base_model.model.model.layers[-1].mlp.up_proj
    with_adapter = scas_scores(peft_model, tokenizer, pool, batch_size=6)
    with peft_model.disable_adapter():
        without = scas_scores(peft_model, tokenizer, pool, batch_size=6)
    assert [s["learning_cost"] for s in without] == pytest.approx([s["learning_cost"] for s in base], abs=1e-5)
    assert max(abs(a["AA"] - b["AA"]) for a, b in zip(with_adapter, base)) > 1e-4  # the adapter is in the features


def test_feature_module_override(tokenizer, pool, tiny_student):
    default = scas_scores(tiny_student, tokenizer, pool, batch_size=6)
    named = scas_scores(tiny_student, tokenizer, pool, batch_size=6, feature_module="layers.1.mlp.up_proj")
    assert [s["learning_cost"] for s in named] == pytest.approx([s["learning_cost"] for s in default])
    other = scas_scores(tiny_student, tokenizer, pool, batch_size=6, feature_module="layers.0.mlp.up_proj")
    assert [s["AA"] for s in other] != pytest.approx([s["AA"] for s in default])
    with pytest.raises(ValueError, match="matches 2 modules"):
        resolve_feature_module(tiny_student, "mlp.up_proj")
