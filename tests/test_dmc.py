"""DMC (docs/methods.md §2): the formula, its three components and the dataset ranking, against independent numbers."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from trl_distill.core.verifiers import completion_text
from trl_distill.dmc.compatibility import (
    capability,
    compatibility,
    format_table,
    overtaking_capability,
    probe_indices,
    quality_per_example,
    rank_datasets,
    relative_difficulty,
)
from trl_distill.dmc.dmc_callback import mixture_weights
from trl_distill.lab.world.tasks import make_task_splits, task_reward


def test_compatibility_on_hand_made_numbers():
    # Q = 0.8, L = 2.0, C = 0.25, β = 1: 0.8 / (1 + 0.75 * 2) = 0.32
    assert compatibility(0.8, 2.0, 0.25, beta=1.0) == pytest.approx(0.32)
    # β = 0 ranks by quality alone; a perfect student (C = 1) ignores difficulty
    assert compatibility(0.8, 2.0, 0.25, beta=0.0) == pytest.approx(0.8)
    assert compatibility(0.8, 7.0, 1.0, beta=3.0) == pytest.approx(0.8)
    # example-level form, vectorised: q = [1, 0.5, 0], ℓ̄ = [0, 4, 1], C = 0.5, β = 0.5
    scores = compatibility([1.0, 0.5, 0.0], [0.0, 4.0, 1.0], 0.5, beta=0.5)
    np.testing.assert_allclose(scores, [1.0, 0.5 / 2.0, 0.0])
    for bad in ({"quality": 1.5}, {"difficulty": -1.0}, {"capability": 2.0}, {"beta": -1.0}):
        kwargs = {"quality": 0.5, "difficulty": 1.0, "capability": 0.5, "beta": 1.0, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            compatibility(**kwargs)


def test_overtaking_capability_is_where_the_scores_cross():
    # hand-computed: Q_t = 0.8, L_t = 0.2; Q_o = 1, L_o = 2; β = 1: 1 − C* = 0.2 / (0.8·2 − 1·0.2) = 1/7
    assert overtaking_capability((0.8, 0.2), (1.0, 2.0)) == pytest.approx(6 / 7)
    assert overtaking_capability((1.0, 0.2), (0.8, 0.1)) is None  # lower quality: never overtakes as C grows
    assert overtaking_capability((0.8, 0.2), (1.0, 0.1)) == 0.0  # higher quality, easier: ahead at every C
    assert overtaking_capability((0.8, 0.2), (1.0, 2.0), beta=0.0) == 0.0  # β = 0 ranks by quality alone
    # brute force: the first C on a fine grid where `other` scores higher than `top`
    grid = np.linspace(0.0, 1.0, 100_001)[:-1]
    for top, other, beta in [
        ((0.8, 0.2), (1.0, 2.0), 1.0),
        ((0.6, 0.5), (0.9, 4.0), 2.0),
        ((0.9, 0.1), (1.0, 30.0), 1.0),
        ((0.8, 0.2), (1.0, 0.3), 1.0),  # ahead from C = 0
        ((1.0, 0.2), (0.5, 0.0), 1.0),
    ]:
        ahead = np.array([compatibility(*other, c, beta) > compatibility(*top, c, beta) for c in grid])
        crossing = overtaking_capability(top, other, beta)
        if ahead.any():
            assert crossing == pytest.approx(grid[ahead.argmax()], abs=2e-5)
        else:
            assert crossing is None


def test_mixture_weights_are_softmax_of_dmc_over_temperature():
    weights = mixture_weights([0.2, 0.1, 0.0], temperature=0.1)
    by_hand = np.array([math.e**2, math.e**1, 1.0]) / (math.e**2 + math.e + 1.0)
    np.testing.assert_allclose(weights, by_hand)


def _brute_force_nll(model, tokenizer, prompt, completion) -> tuple[float, int]:
    """Σ -log p over the completion tokens, from full logits of one unpadded sequence."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    ids = tokenizer(full_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    targets = ids[0, start:]
    total = -logprobs[start - 1 : -1].gather(-1, targets[:, None]).sum().item()
    return total, len(targets)


def test_difficulty_is_the_mean_token_nll_of_the_responses_on_the_probe(tiny_student, tokenizer, arithmetic):
    data = arithmetic["train"].select(range(12))
    pairs = [_brute_force_nll(tiny_student, tokenizer, p, c) for p, c in zip(data["prompt"], data["completion"])]
    expected = sum(t for t, _ in pairs) / sum(n for _, n in pairs)
    assert relative_difficulty(tiny_student, tokenizer, data, probe_size=None, batch_size=5) == pytest.approx(
        expected, rel=1e-5
    )
    # a seeded probe: the same rows every time, and L is the brute-force NLL on exactly those rows
    probe = probe_indices(len(data), 5, seed=3)
    assert probe == probe_indices(len(data), 5, seed=3) and len(set(probe)) == 5
    expected = sum(pairs[i][0] for i in probe) / sum(pairs[i][1] for i in probe)
    assert relative_difficulty(tiny_student, tokenizer, data, probe_size=5, seed=3) == pytest.approx(
        expected, rel=1e-5
    )


def test_capability_is_the_verifier_pass_rate_of_greedy_generations(tiny_student, tokenizer, arithmetic):
    dev = arithmetic["dev"].select(range(8))
    seen_columns = []

    def parity_verifier(prompts, completions, answer, task, **kwargs):
        # a stand-in verifier whose pass rate on a random model is neither 0 nor 1; the dev prompts are
        # conversational, so each completion arrives as TRL passes it: one assistant message
        seen_columns.append((len(answer), len(task)))
        return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]

    # independent reference: one prompt at a time, no padding, plain greedy `generate`
    passes = []
    for prompt in dev["prompt"]:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = tiny_student.generate(
                ids,
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        completion = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        passes.append(sum(map(ord, completion)) % 2 == 0)
    expected = sum(passes) / len(passes)
    assert 0 < expected < 1, "the reference should not be degenerate"
    got = capability(tiny_student, tokenizer, dev, parity_verifier, max_new_tokens=8, batch_size=4)
    assert got == pytest.approx(expected)
    assert seen_columns and all(a == t for a, t in seen_columns)  # dev columns reach the verifier


def test_quality_from_correct_flags_rewards_or_a_verifier():
    rows = Dataset.from_dict(
        {
            "prompt": ["a", "b", "c", "d"],
            "completion": ["Answer: 1", "Answer: 2", "Answer: 3", "nothing"],
            "answer": ["1", "5", "3", "4"],
            "task": ["arithmetic"] * 4,
            "correct": [True, False, True, False],
            "reward": [10.0, 0.0, 5.0, 0.0],  # in reward_range: one outside is refused (test_input_errors_data.py)
        }
    )
    assert quality_per_example(rows) == [1.0, 0.0, 1.0, 0.0]
    assert quality_per_example(rows, reward_column="reward", reward_range=(0.0, 10.0)) == [1.0, 0.0, 0.5, 0.0]
    assert quality_per_example(rows.remove_columns("correct"), verifier=task_reward) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no 'correct' column and no verifier"):
        quality_per_example(rows.remove_columns("correct"), name="x")
    with pytest.raises(ValueError, match="no reward column 'score'"):
        quality_per_example(rows, reward_column="score")


def test_rank_datasets_orders_by_dmc_and_prints_a_table(tiny_student, tokenizer, arithmetic, capsys):
    good = arithmetic["train"].select(range(16))
    flawed = make_task_splits(("arithmetic",), 16, 4, 4, seed=0, style="terse")["train"]
    flawed = flawed.add_column("correct", [i % 2 == 0 for i in range(16)])  # Q = 0.5, verified by flags
    table = rank_datasets(
        tiny_student,
        tokenizer,
        {"flawed": flawed, "good": good},
        arithmetic["dev"],
        task_reward,
        probe_size=8,
        dev_size=4,
        max_new_tokens=8,
        print_table=True,
    )
    # similar difficulty for a random model, so twice the quality wins
    assert [row["dataset"] for row in table] == ["good", "flawed"] and table[0]["dmc"] > table[1]["dmc"]
    for row in table:
        # DMC = Q / (1 + β·(1 − C)·L) with β = 1, written out (C = 0 here, so Q / (1 + L))
        assert row["dmc"] == pytest.approx(row["quality"] / (1 + (1 - row["capability"]) * row["difficulty"]))
        assert row["difficulty"] == pytest.approx(
            relative_difficulty(tiny_student, tokenizer, {"good": good, "flawed": flawed}[row["dataset"]], 8)
        )
    assert {row["dataset"]: row["quality"] for row in table} == {"good": 1.0, "flawed": 0.5}  # good: by verifier
    assert table[0]["capability"] == table[1]["capability"] == 0.0  # a random model solves nothing
    printed = capsys.readouterr().out
    assert printed.strip() == format_table(table) and "DMC" in printed and "flawed" in printed


def test_bad_inputs_give_clear_errors(tiny_student, tokenizer, arithmetic):
    good = arithmetic["train"].select(range(4))
    kwargs = {"probe_size": 2, "dev_size": 2, "max_new_tokens": 4}
    with pytest.raises(ValueError, match="'empty' is empty"):
        rank_datasets(tiny_student, tokenizer, {"empty": good.select([])}, arithmetic["dev"], task_reward, **kwargs)
    with pytest.raises(ValueError, match=r"'nocol' has no \['completion'\] column"):
        rank_datasets(
            tiny_student, tokenizer, {"nocol": good.remove_columns("completion")}, arithmetic["dev"], task_reward
        )
    with pytest.raises(ValueError, match="no verifier was given"):
        rank_datasets(tiny_student, tokenizer, {"good": good}, arithmetic["dev"], None)
    with pytest.raises(ValueError, match="dev split for capability"):
        rank_datasets(tiny_student, tokenizer, {"good": good}, arithmetic["dev"].select([]), task_reward)


def test_correct_values_that_are_not_booleans_name_the_row_column_and_value():
    rows = {"prompt": ["a", "b"], "completion": ["Answer: 1", "Answer: 2"]}
    for column, shown in ((["True", "yes"], "'yes'"), (["True", "False"], "'False'"), ([1.0, float("nan")], "nan")):
        data = Dataset.from_dict({**rows, "correct": column})
        if not isinstance(column[0], float):  # a string column: row 0 is the first bad value
            shown, column = repr(column[0]), None
        row = 1 if column else 0
        with pytest.raises(ValueError, match=rf"Row {row} of candidate dataset 'x' has 'correct' = {shown} .*boolean"):
            quality_per_example(data, name="x")
    with pytest.raises(ValueError, match=r"Row 0 .* 'reward' = 'high'"):
        quality_per_example(Dataset.from_dict({**rows, "reward": ["high", "low"]}), reward_column="reward", name="x")
    assert quality_per_example(Dataset.from_dict({**rows, "correct": [1, 0]})) == [1.0, 0.0]  # 0/1 stay numbers


def test_a_verifier_returning_nan_or_too_few_rewards_is_named():
    rows = Dataset.from_dict({"prompt": ["a", "b"], "completion": ["Answer: 1", "Answer: 2"], "answer": ["1", "2"]})

    def nan_verifier(prompts, completions, **kwargs):
        return [1.0, float("nan")]

    def per_prompt_verifier(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match=r"'nan_verifier' returned nan for completion 1 \(responses of 'dataset'\)"):
        quality_per_example(rows, verifier=nan_verifier)
    with pytest.raises(ValueError, match=r"'per_prompt_verifier' returned 1 values for 2 completions"):
        quality_per_example(rows, verifier=per_prompt_verifier)


def test_capability_refuses_a_nan_verifier(tiny_student, tokenizer, arithmetic):
    def nan_verifier(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    with pytest.raises(ValueError, match=r"'nan_verifier' returned nan for completion 0 \(dev generations\)"):
        capability(tiny_student, tokenizer, arithmetic["dev"].select(range(2)), nan_verifier, max_new_tokens=2)


def test_dev_size_zero_is_reported_as_dev_size(tiny_student, tokenizer, arithmetic):
    good = arithmetic["train"].select(range(4))
    with pytest.raises(ValueError, match="dev_size must be >= 1"):
        rank_datasets(tiny_student, tokenizer, {"good": good}, arithmetic["dev"], task_reward, dev_size=0)
    with pytest.raises(ValueError, match="probe_size must be >= 1"):
        probe_indices(10, 0)


def test_rank_datasets_takes_one_dataset_and_rows_as_lists_or_columns(tiny_student, tokenizer, arithmetic):
    good, dev = arithmetic["train"].select(range(4)), arithmetic["dev"].select(range(2))
    kwargs = {"probe_size": 4, "max_new_tokens": 2}
    expected = rank_datasets(tiny_student, tokenizer, {"dataset": good}, dev, task_reward, **kwargs)
    assert rank_datasets(tiny_student, tokenizer, good, dev, task_reward, **kwargs) == expected
    as_rows = rank_datasets(tiny_student, tokenizer, good.to_list(), dev.to_list(), task_reward, **kwargs)
    as_columns = rank_datasets(
        tiny_student, tokenizer, {"dataset": good.to_dict()}, dev.to_dict(), task_reward, **kwargs
    )
    assert as_rows == expected and as_columns == expected and expected[0]["dataset"] == "dataset"
    assert relative_difficulty(tiny_student, tokenizer, good.to_list(), 4) == pytest.approx(expected[0]["difficulty"])
    with pytest.raises(TypeError, match="a list of row dicts or a dict of columns, got int"):
        rank_datasets(tiny_student, tokenizer, {"x": 3}, dev, task_reward)
    with pytest.raises(TypeError, match="dev_dataset must be a `datasets.Dataset`, a list of row dicts"):
        capability(tiny_student, tokenizer, "not a dataset", task_reward)


def test_mixture_gives_an_all_wrong_dataset_weight_zero():
    # plain softmax([0.25, 0] / 0.1) gives the Q = 0 dataset 1 / (1 + e^2.5) = 7.6% of the draws
    assert mixture_weights([0.25, 0.0], 0.1)[1] == pytest.approx(1 / (1 + math.exp(2.5)))
    np.testing.assert_allclose(mixture_weights([0.25, 0.0], 0.1, quality=[0.5, 0.0]), [1.0, 0.0])
    three = mixture_weights([0.2, 0.0, 0.1], 0.1, quality=[0.4, 0.0, 0.3])
    np.testing.assert_allclose(three, [math.e / (math.e + 1), 0.0, 1 / (math.e + 1)])


def test_plain_text_dev_prompts_are_asked_as_a_user_turn_once_said(tiny_student, tokenizer, arithmetic, caplog):
    from trl_distill.dmc import compatibility as dmc

    dev = arithmetic["dev"].select(range(4))
    plain = dev.map(lambda row: {"prompt": row["prompt"][-1]["content"]})
    assert isinstance(plain[0]["prompt"], str)
    seen = []

    def record(prompts, completions, **kwargs):
        seen.append([completion_text(c) for c in completions])  # plain or conversational, as the dev prompt
        return [1.0] * len(completions)

    dmc._logged.clear()
    capability(tiny_student, tokenizer, dev, record, max_new_tokens=6)
    with caplog.at_level("WARNING", logger="trl_distill.dmc.compatibility"):
        capability(tiny_student, tokenizer, plain, record, max_new_tokens=6)
        capability(tiny_student, tokenizer, plain, record, max_new_tokens=6)
    # the plain question is asked exactly as the conversation holding it, and the fallback is said once
    assert seen[1] == seen[0] == seen[2]
    said = [r.getMessage() for r in caplog.records if "dev prompts are plain text" in r.getMessage()]
    assert len(said) == 1 and "plain_prompts_as_chat=False" in said[0]
    capability(tiny_student, tokenizer, plain, record, max_new_tokens=6, plain_prompts_as_chat=False)
    assert seen[3] != seen[0]  # the raw text is a different prompt


def test_plain_text_candidates_keep_plain_dev_prompts_raw(arithmetic):
    from trl_distill.dmc.compatibility import plain_prompts_as_chat_for

    chat = arithmetic["train"].select(range(2))
    plain = Dataset.from_dict({"prompt": ["1+1=", "2+2="], "completion": ["2", "4"]})
    assert plain_prompts_as_chat_for({"plain": plain}) is False  # a student trained on raw text is asked raw text
    assert plain_prompts_as_chat_for({"chat": chat, "plain": plain}) is None  # a template when the tokenizer has one
