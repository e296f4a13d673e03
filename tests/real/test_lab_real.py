"""`trl-distill lab --real` at its smallest: the real-model SCAS experiment on SmolLM2-135M-Instruct records its
precondition, the three arms and the base model, in `report.md` and `results.json`."""

import json

import pytest

from trl_distill.lab.experiments.real_scas import STYLES, answer, build_pool, last_number_reward, problems


def test_every_style_is_verified_correct_and_ends_on_its_answer():
    items = problems(16, seed=0)
    pool = build_pool(items)
    assert len(pool) == 4 * 16 and all(pool["correct"]) and set(pool["teacher"]) == set(STYLES)
    for p in items:
        assert all(answer(p, s).endswith(f"Answer: {p['answer']}") for s in STYLES)
    # the base model writes no Answer: line; its last number is read
    assert last_number_reward(["37 + 45 = 82, so 82 - 18 = 64.", "It is 63."], [64, 64]) == [1.0, 0.0]


@pytest.mark.timeout(300)
def test_real_smoke_run_reports_the_precondition_and_three_arms(smollm2_dir, tmp_path):
    from trl_distill.scripts.lab import main

    # `smollm2_dir` fetched the checkpoint: the experiment finds it in the cache
    assert main(["--real", "--preset", "smoke", "--threads", "1", "--output_dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    entry = results["experiments"]["real_scas"]
    assert set(entry["methods"]) == {"best teacher (cot)", "random style", "SCAS"}
    assert set(entry["mean_learning_cost"]) == set(STYLES)
    assert sum(entry["scas_pick_share"].values()) == pytest.approx(1.0)
    assert entry["trained_styles"]["best teacher (cot)"]["cot"] == pytest.approx(1.0)  # the tie goes to cot
    assert [p["met"] in (True, False) for p in entry["preconditions"]] == [True, True]
    report = (tmp_path / "report.md").read_text()
    assert "learning cost, costliest − cheapest style" in report and "completion NLL" in report
    for arm in entry["methods"]:
        assert f"| {arm} |" in report
