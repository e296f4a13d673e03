"""SCAS selection on hand-made scores: the rank-group rule, ties, seeds, baselines and prompts without answers."""

import logging

import pytest
from datasets import Dataset

from trl_distill.scas.selection import rank_group, scas_select


def pool_of(costs, teachers=None, correct=None, prompt_id=0):
    n = len(costs)
    return {
        "prompt_id": [prompt_id] * n,
        "teacher": teachers or [f"t{i}" for i in range(n)],
        "correct": correct or [True] * n,
        "learning_cost": costs,
        "d_A": [10 - c for c in costs],
    }


def merge(*pools):
    return {k: sum((p[k] for p in pools), []) for k in pools[0]}


def test_rank_groups_n9_and_n3():
    # n=9, G=5: ceil(r·5/9) -> 1,2,2,3,3,4,4,5,5: group 1 is rank 1 only
    assert [rank_group(r, 9) for r in range(1, 10)] == [1, 2, 2, 3, 3, 4, 4, 5, 5]
    # n=3: ceil(5/3)=2, ceil(10/3)=4, 5
    assert [rank_group(r, 3) for r in range(1, 4)] == [2, 4, 5]
    assert [rank_group(r, 10) for r in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert rank_group(1, 1) == 5


def test_n9_group1_is_the_cheapest_answer():
    costs = [5.0, 3.0, 9.0, 1.5, 7.0, 2.0, 8.0, 4.0, 6.0]
    pool = pool_of(costs)
    for seed in range(5):
        selection = scas_select(pool, seed=seed)
        assert selection.indices == [3]  # cost 1.5
    assert selection.groups[3] == 1 and selection.groups[5] == 2 and selection.groups[2] == 5
    # group 5 = ranks 8 and 9 (costs 8.0 and 9.0): both reachable with different seeds
    picks = {scas_select(pool, group=5, seed=s).indices[0] for s in range(20)}
    assert picks == {2, 6}


def test_n3_empty_group1_falls_back_to_the_cheapest():
    pool = pool_of([2.0, 1.0, 3.0])
    selection = scas_select(pool)
    assert selection.groups == [4, 2, 5]
    assert selection.indices == [1]
    assert scas_select(pool, group=5).indices == [2]


def test_ties_broken_by_teacher_name():
    pool = pool_of([1.0, 1.0, 1.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], teachers=["zeta", "alpha", "mid", *"defghi"])
    selection = scas_select(pool)
    assert selection.indices == [1]  # alpha < mid < zeta at equal cost
    assert selection.groups[:3] == [2, 1, 2]  # ranks 3, 1, 2 of n=9


def test_seeded_draws_are_reproducible_and_vary():
    # n=10: group 1 holds ranks 1-2; 20 prompts, each draw is seeded by (seed, prompt_id)
    pools = merge(*[pool_of([float(c) for c in range(10)], prompt_id=p) for p in range(20)])
    a, b = scas_select(pools, seed=1), scas_select(pools, seed=1)
    c = scas_select(pools, seed=2)
    assert a.indices == b.indices
    assert a.indices != c.indices
    assert {i % 10 for i in a.indices} == {0, 1}


def test_only_correct_compete_and_skipped_prompts(caplog):
    pool = merge(
        pool_of([1.0, 2.0, 3.0], correct=[False, True, True], prompt_id="a"),
        pool_of([1.0, 2.0], correct=[False, False], prompt_id="b"),
    )
    with caplog.at_level(logging.WARNING):
        selection = scas_select(pool)
    assert selection.indices == [1]
    assert selection.skipped == ["b"]
    assert "1 of 2 prompts have no verified-correct candidate" in caplog.text
    with pytest.raises(ValueError, match="strict=False"):
        scas_select(pool, strict=True)
    assert scas_select(pool, only_correct=False).indices == [0, 3]


def test_baselines():
    # teacher accuracy: big 2/3, small 3/3 -> best_teacher picks small wherever it is correct
    pool = merge(
        pool_of([1.0, 5.0], teachers=["big", "small"], prompt_id=0),
        pool_of([5.0, 1.0], teachers=["big", "small"], prompt_id=1),
        pool_of([1.0, 5.0], teachers=["big", "small"], correct=[False, True], prompt_id=2),
    )
    assert scas_select(pool, strategy="best_teacher").indices == [1, 3, 5]
    # min_nll uses d_A = 10 - cost here: the highest cost has the lowest NLL
    assert scas_select(pool, strategy="min_nll").indices == [1, 2, 5]
    assert scas_select(pool, strategy="scas").indices == [0, 3, 5]
    random_pick = scas_select(pool, strategy="random", seed=0).indices
    assert random_pick[2] == 5 and all(i in (2 * k, 2 * k + 1) for k, i in enumerate(random_pick))


def test_scores_list_and_errors():
    pool = pool_of([3.0, 1.0, 2.0])
    del pool["learning_cost"]
    assert scas_select(pool, scores=[{"learning_cost": c, "d_A": 0.0} for c in (3.0, 1.0, 2.0)]).indices == [1]
    assert scas_select(pool, scores=[3.0, 1.0, 2.0]).indices == [1]
    with pytest.raises(ValueError, match="needs a learning_cost score"):
        scas_select(pool)
    with pytest.raises(ValueError, match="Unknown selection strategy"):
        scas_select(pool, strategy="best")
    with pytest.raises(ValueError, match="group <= num_groups"):
        scas_select(pool, scores=[1.0, 2.0, 3.0], group=6)


def test_unscored_ineligible_rows_may_come_first():
    # Callers leave rows that cannot compete unscored (None); the first row being one of them must not matter.
    pool = Dataset.from_list(
        [
            {"prompt_id": 0, "prompt": "p", "completion": "x", "teacher": "a", "correct": False},
            {"prompt_id": 0, "prompt": "p", "completion": "y", "teacher": "b", "correct": True},
            {"prompt_id": 0, "prompt": "p", "completion": "z", "teacher": "c", "correct": True},
        ]
    )
    scores = [None, {"learning_cost": 2.0, "d_A": 0.1}, {"learning_cost": 1.0, "d_A": 0.5}]
    assert scas_select(pool, scores).indices == [2]
    assert scas_select(pool, scores, strategy="min_nll").indices == [1]


def test_nan_scores_never_win(caplog):
    pool = merge(pool_of([float("nan"), 2.0, 3.0]), pool_of([float("nan")], prompt_id=1))
    with caplog.at_level(logging.WARNING, logger="trl_distill.scas.selection"):
        selection = scas_select(pool)
    assert selection.indices == [1] and selection.skipped == [1]  # prompt 1 has nothing left that can compete
    assert "2 candidate(s) have a NaN learning_cost (e.g. row 0, prompt_id 0)" in caplog.text


def test_best_teacher_ranks_by_accuracy_even_when_wrong_answers_compete():
    # teacher "a" (alphabetically first) is right once in three, "b" always: "b" must win every prompt
    pool = merge(*[pool_of([0.0, 0.0], teachers=["a", "b"], correct=[i == 0, True], prompt_id=i) for i in range(3)])
    for only_correct in (True, False):
        selection = scas_select(pool, strategy="best_teacher", only_correct=only_correct)
        assert [pool["teacher"][i] for i in selection.indices] == ["b", "b", "b"]
    del pool["correct"]
    with pytest.raises(ValueError, match="best_teacher.*needs a `correct` column"):
        scas_select(pool, strategy="best_teacher", only_correct=False)


def test_grouped_pools_and_lists_of_rows_are_accepted():
    grouped = Dataset.from_list(
        [
            {
                "prompt_id": 7,
                "prompt": "p",
                "candidates": [{"completion": c, "teacher": t, "correct": True} for c, t in (("x", "a"), ("y", "b"))],
            },
            {"prompt_id": 8, "prompt": "q", "candidates": [{"completion": "z", "teacher": "a", "correct": False}]},
        ]
    )
    scores = [{"learning_cost": 2.0, "d_A": 0.0}, {"learning_cost": 1.0, "d_A": 0.0}, None]
    selection = scas_select(grouped, scores)
    assert selection.indices == [1] and selection.prompt_ids == [7] and selection.skipped == [8]
    assert scas_select(grouped.to_list(), scores).indices == [1]
    rows = [dict(zip(pool_of([3.0, 1.0]), values)) for values in zip(*pool_of([3.0, 1.0]).values())]
    assert scas_select(rows).indices == [1]


def test_score_count_errors_say_too_many_or_too_few():
    pool = pool_of([3.0, 1.0, 2.0])
    del pool["learning_cost"]
    with pytest.raises(ValueError, match="Got 4 scores for the 3 rows of the pool: too many"):
        scas_select(pool, scores=[3.0, 1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="Got 2 scores for the 3 rows of the pool: too few"):
        scas_select(pool, scores=[{"learning_cost": 1.0}] * 2)


def test_score_key_selects_by_a_variant():
    pool = pool_of([3.0, 1.0, 2.0])
    scores = [{"learning_cost": c, "nll_weight_score": -c, "d_A": 0.0} for c in (3.0, 1.0, 2.0)]
    assert scas_select(pool, scores).indices == [1]
    assert scas_select(pool, scores, score_key="nll_weight_score").indices == [0]
    assert scas_select(pool, scores, score_key="scas_score").indices == [1]  # the released name of learning_cost
    with pytest.raises(ValueError, match="have no 'similarity_score'"):
        scas_select(pool, scores, score_key="similarity_score")
    with pytest.raises(ValueError, match="Unknown score_key"):
        scas_select(pool, scores, score_key="cost")
