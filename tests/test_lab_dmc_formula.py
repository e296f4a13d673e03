"""The DMC world designed from DMC's formula (`trl_distill.lab.experiments.dmc_formula`, issue 30 part 2): its noisy
candidates have the quality they are built for, and its precondition is Spearman ρ and crossings computed by hand."""

import math

import pytest

from trl_distill.dmc.compatibility import overtaking_capability
from trl_distill.lab.experiments import dmc_formula
from trl_distill.lab.world.tasks import make_task_splits


@pytest.fixture(scope="module")
def cot_rows():
    return make_task_splits(("arithmetic",), 200, 4, 4, seed=0, style="cot", steps=2, max_value=9)["train"]


def lines(row) -> list[str]:
    return row["completion"][0]["content"].split("\n")


def test_slips_make_the_share_wrong_and_the_answer_follows_the_working(cot_rows):
    noisy = dmc_formula.with_slips(cot_rows, 0.4, seed=3)
    assert sum(noisy["correct"]) == 120  # 200 − round(0.4 · 200), checked by the task's verifier
    for clean, row in zip(cot_rows, noisy):
        before, after = lines(clean), lines(row)
        assert after[0] == before[0]  # only the last step slips
        stated = after[-1].removeprefix("Answer: ")
        assert after[-2].rpartition("=")[2] == stated  # the answer agrees with the teacher's own working
        slip = int(stated) - int(clean["answer"])
        assert (slip == 0) == row["correct"] and abs(slip) <= 9


def test_wrong_answers_keep_the_working(cot_rows):
    noisy = dmc_formula.with_wrong_answers(cot_rows, 0.6, seed=1)
    assert sum(noisy["correct"]) == 80
    for clean, row in zip(cot_rows, noisy):
        assert lines(row)[:-1] == lines(clean)[:-1]
    with pytest.raises(ValueError, match="share of wrong answers"):
        dmc_formula.with_wrong_answers(cot_rows, 1.5)


def test_the_student_states_its_answer_on_one_row_in_answer_every():
    data = dmc_formula.student_data(64)
    stated = [i for i, row in enumerate(data) if "Answer:" in row["completion"][0]["content"]]
    assert stated == list(range(0, 64, dmc_formula.ANSWER_EVERY))


def table(capability, **rows):
    dmc = {n: q / (1 + (1 - capability) * ell) for n, (q, ell) in rows.items()}  # β = 1, written out
    out = [
        {"dataset": n, "quality": q, "difficulty": ell, "capability": capability, "dmc": dmc[n]}
        for n, (q, ell) in rows.items()
    ]
    return sorted(out, key=lambda r: -r["dmc"])


def test_stage_precondition_by_hand():
    # B (Q 0.4, L 0.5) against A (Q 1, L 6): A leads iff 1 − C < 0.6 / (0.4·6 − 0.5) = 0.3158, i.e. C > 0.684
    step0 = table(0.0, b=(0.4, 0.5), m=(0.6, 2.0), a=(1.0, 6.0))
    assert [r["dataset"] for r in step0] == ["b", "m", "a"]
    assert dmc_formula.crossing(step0, "b")["a"] == pytest.approx(1 - 0.6 / (0.4 * 6 - 0.5))
    reversed_ = table(0.95, b=(0.4, 0.2), m=(0.6, 1.5), a=(1.0, 6.0))
    assert [r["dataset"] for r in reversed_] == ["a", "m", "b"]
    same = table(0.3, b=(0.4, 0.2), m=(0.6, 1.5), a=(1.0, 6.0))
    met = dmc_formula.stage_precondition(step0, [reversed_, reversed_], 32, "b")
    assert met["met"] is True and met["value"] == pytest.approx(-1.0)
    assert "after the first stage: a, a" in met["detail"]
    half = dmc_formula.stage_precondition(step0, [reversed_, same], 32, "b")
    assert half["met"] is False and half["value"] == pytest.approx(0.0)  # ρ −1 and +1: one seed did not move
    assert math.isfinite(half["value"]) and "+1.000" in half["detail"]


def test_crossing_design_trades_quality_against_difficulty(cot_rows):
    (style_b, share_b), (style_a, share_a) = (dmc_formula.CROSSING[n] for n in ("cot-noisy", "equation-clean"))
    assert (style_b, style_a, share_a) == ("cot", "equation", 0.0) and 0.0 < share_b < 1.0
    noisy = dmc_formula.with_slips(cot_rows, share_b, seed=0)
    assert sum(noisy["correct"]) == 200 - round(share_b * 200)  # Q_B = 1 − share, by the task's verifier
    # docs/lab.md's prediction from the step-0 terms measured on the DMC student (rounded there): c* = 0.357
    c_star = overtaking_capability((0.529, 0.470), (1.0, 2.272))
    assert c_star == pytest.approx(1 - 0.471 / (0.529 * 2.272 - 0.470)) and c_star == pytest.approx(0.357, abs=1e-3)
    with pytest.raises(ValueError, match="Unknown design"):
        dmc_formula.candidate_datasets(None, design="flat")


def test_stage_precondition_needs_the_top_to_move_on_two_seeds_in_three():
    step0 = table(0.0, b=(0.4, 0.5), a=(1.0, 3.0))
    moved, kept = table(0.8, b=(0.4, 0.3), a=(1.0, 3.0)), table(0.1, b=(0.4, 0.3), a=(1.0, 3.0))
    assert [moved[0]["dataset"], kept[0]["dataset"]] == ["a", "b"]
    assert dmc_formula.stage_precondition(step0, [moved, moved, kept], 32, "b")["met"] is True
    result = dmc_formula.stage_precondition(step0, [moved, kept, kept], 32, "b")
    assert result["met"] is False and result["value"] == pytest.approx(1 / 3)  # ρ −1, +1, +1
    assert "moved on 1 of 3 seeds" in result["detail"]
