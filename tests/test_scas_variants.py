"""The released scorer's score variants and `d_Q` scopes against an explicit T×T cosine-matrix computation."""

import math

import pytest
import torch
from datasets import Dataset

from trl_distill.core.logprobs import encode_prompt_completion
from trl_distill.core.pool import to_long_pool
from trl_distill.lab.world.models import tiny_model
from trl_distill.lab.world.toys import toy_pool
from trl_distill.scas.scoring import SCORE_KEYS, scas_scores
from trl_distill.scas.selection import scas_select


def header_length(tokenizer, prompt):
    """Tokens of the text the generation prompt adds (the assistant header), tokenized on its own."""
    if not isinstance(prompt, list):
        return 0
    with_gen = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    no_gen = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=False)
    assert with_gen.startswith(no_gen)
    return len(tokenizer(with_gen[len(no_gen) :], add_special_tokens=False)["input_ids"])


def brute_force(model, tokenizer, prompt, completion, lmbda, q_nll_scope):
    """Every released score, one sequence at a time: full logits, explicit T×T cosine matrix and pair loops."""
    enc = encode_prompt_completion(tokenizer, prompt, completion)
    ids = torch.tensor([enc["input_ids"]])
    captured = []
    handle = model.model.layers[-1].mlp.up_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    handle.remove()
    nll = -torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]  # nll[t-1] = ℓ_t
    special = set(tokenizer.all_special_ids)
    T = ids.shape[1]
    n_prompt = enc["completion_mask"].index(1)
    n_no_gen = n_prompt - header_length(tokenizer, prompt)
    plain = [t for t in range(T) if ids[0, t].item() not in special]
    A = [t for t in plain if t >= n_prompt]  # features: special tokens dropped, position 0 kept
    Q = [t for t in plain if t < n_prompt]
    Q_nll = [t for t in Q if t >= 1 and (q_nll_scope == "prompt_with_gen" or t < n_no_gen)]
    u = captured[0][0].double()
    cos = (u @ u.T) / (u.norm(dim=-1)[:, None] * u.norm(dim=-1)[None, :])
    d_A = nll[[t - 1 for t in A if t >= 1]].mean().item()
    d_Q = nll[[t - 1 for t in Q_nll]].mean().item()
    AA = cos[A][:, A].mean().item()
    AQ = cos[A][:, Q].mean().item()
    pairs = [(s, t) for s in A for t in A if s != t]
    AA_no_diag = sum(cos[s, t].item() for s, t in pairs) / len(pairs) if len(A) > 1 else 0.0
    w = 1 - lmbda
    return {
        "learning_cost": w * d_A**2 * AA + lmbda * d_A * d_Q * AQ,
        "d_A": d_A,
        "d_Q": d_Q,
        "AA": AA,
        "AQ": AQ,
        "AA_no_diag": AA_no_diag,
        "scas_score_no_diag": w * d_A**2 * AA_no_diag + lmbda * d_A * d_Q * AQ,
        "nll_weight_score": w * d_A**2 + lmbda * d_A * d_Q,
        "similarity_score": w * AA + lmbda * AQ,
        "similarity_score_no_diag": w * AA_no_diag + lmbda * AQ,
        "answer_mean_nll_score": d_A,
        "num_answer_tokens": len(A),
        "num_prompt_tokens": len(Q),
    }


def plain_pool():
    """Plain-string prompts and answers: no chat template, position 0 an ordinary token; one one-token answer."""
    rows = [
        ("Compute 3+4.", ["Answer: 7", "3+4=7. Answer: 7", "7"]),
        ("Compute 10-2.", ["Answer: 8", "10-2 is 8, so Answer: 8", "8 8"]),
    ]
    return Dataset.from_list(
        [
            {"prompt_id": i, "prompt": p, "completion": c, "teacher": f"t{j}", "correct": True}
            for i, (p, answers) in enumerate(rows)
            for j, c in enumerate(answers)
        ]
    )


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer, "xs", "qwen2", seed=5)


@pytest.mark.parametrize("q_nll_scope", ["prompt_with_gen", "prompt_no_gen"])
@pytest.mark.parametrize("kind", ["conversational", "plain"])
def test_every_variant_matches_the_brute_force(tokenizer, model, kind, q_nll_scope):
    pool = toy_pool(num_prompts=2, styles=("cot", "terse")) if kind == "conversational" else plain_pool()
    long = to_long_pool(pool)
    scores = scas_scores(model, tokenizer, pool, lmbda=0.3, batch_size=3, q_nll_scope=q_nll_scope)
    for score, prompt, completion in zip(scores, long["prompt"], long["completion"]):
        expected = brute_force(model, tokenizer, prompt, completion, 0.3, q_nll_scope)
        for key, value in expected.items():
            assert score[key] == pytest.approx(value, abs=1e-4), key
    # the variants are not all the same number, and the no-diag AA differs from AA
    assert all(abs(s["AA"] - s["AA_no_diag"]) > 1e-4 for s in scores if s["num_answer_tokens"] > 1)


def test_no_gen_scope_changes_d_q_only_on_chat_templates(tokenizer, model):
    pool = toy_pool(num_prompts=2, styles=("terse",), wrong_teacher=None)
    with_gen = scas_scores(model, tokenizer, pool)
    no_gen = scas_scores(model, tokenizer, pool, q_nll_scope="prompt_no_gen")
    assert all(abs(a["d_Q"] - b["d_Q"]) > 1e-5 for a, b in zip(with_gen, no_gen))
    assert all(
        a["AQ"] == pytest.approx(b["AQ"]) and a["d_A"] == pytest.approx(b["d_A"]) for a, b in zip(with_gen, no_gen)
    )
    plain_with, plain_no = (
        scas_scores(model, tokenizer, plain_pool(), q_nll_scope=s) for s in ("prompt_with_gen", "prompt_no_gen")
    )
    assert [s["d_Q"] for s in plain_with] == pytest.approx([s["d_Q"] for s in plain_no])
    with pytest.raises(ValueError, match="q_nll_scope must be one of"):
        scas_scores(model, tokenizer, pool, q_nll_scope="prompt")


def test_one_token_answer_has_no_diag_zero(tokenizer, model):
    scores = scas_scores(model, tokenizer, plain_pool())
    single = [s for s in scores if s["num_answer_tokens"] == 1]
    assert single and all(s["AA_no_diag"] == 0.0 and s["AA"] == pytest.approx(1.0) for s in single)


@pytest.mark.parametrize("score_key", SCORE_KEYS)
def test_scas_select_ranks_by_each_variant(tokenizer, model, score_key):
    pool = toy_pool(num_prompts=3, styles=("cot", "terse", "verbose"))  # 4 candidates a prompt, some wrong
    long = to_long_pool(pool)
    scores = scas_scores(model, tokenizer, pool)
    selection = scas_select(long, scores, score_key=score_key)  # n <= G: group 1 is the cheapest answer
    for prompt_id, chosen in zip(selection.prompt_ids, selection.indices):
        rows = [i for i, p in enumerate(long["prompt_id"]) if p == prompt_id and long["correct"][i]]
        values = {
            i: brute_force(model, tokenizer, long["prompt"][i], long["completion"][i], 0.5, "prompt_with_gen")[
                score_key
            ]
            for i in rows
        }
        assert chosen == min(values, key=values.get)
        assert not math.isnan(values[chosen])
