"""`trl-distill lab --quick` end to end (every trainer of the package on the tiny world), and the lab's statistics."""

import json
import math
import os

import pytest

from trl_distill.lab.experiments import EXPERIMENTS
from trl_distill.lab.experiments.common import compare, spearman, summary


def test_summary_is_mean_and_sample_std():
    stat = summary([0.25, 0.5, 0.75])
    assert stat["mean"] == pytest.approx(0.5)
    assert stat["std"] == pytest.approx(0.25)  # sqrt(((-.25)² + 0 + .25²) / 2)
    assert stat["n"] == 3 and stat["values"] == [0.25, 0.5, 0.75]


def test_compare_against_the_standard_error_of_the_difference():
    base = summary([0.2, 0.3, 0.4])  # std 0.1
    better = summary([0.6, 0.7, 0.8])
    slightly = summary([0.25, 0.35, 0.45])
    se = math.sqrt(2 * 0.01 / 3)
    assert compare(better, base) == pytest.approx({"difference": 0.4, "standard_error": se, "verdict": "reproduced"})
    assert compare(slightly, base)["verdict"] == "inconclusive"  # 0.05 < se ≈ 0.082
    assert compare(base, base)["verdict"] == "not reproduced"  # a tie is not a win
    assert compare(base, better, higher_is_better=False)["verdict"] == "reproduced"


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = 1,2,3,4, y = 1,3,2,4: 1 - 6·Σd²/(n(n²-1)) = 1 - 6·2/60
    assert spearman([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]) == pytest.approx(0.8)
    # ties take the average rank: y ranks 1.5, 1.5, 3
    assert spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(0.8660254)
    assert math.isnan(spearman([1, 2, 3], [1, 1, 1]))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from trl_distill.scripts.lab import main

    out = tmp_path_factory.mktemp("lab")
    assert main(["--quick", "--output-dir", str(out)]) == 0
    with open(out / "results.json") as f:
        return out, json.load(f)


def test_quick_lab_writes_a_report_with_every_experiment(quick_report):
    out, results = quick_report
    assert list(results["experiments"]) == list(EXPERIMENTS)
    report = (out / "report.md").read_text()
    pngs = [name for name in os.listdir(out) if name.endswith(".png")]
    for name, experiment in results["experiments"].items():
        assert experiment["verdict"] in ("reproduced", "partly reproduced", "inconclusive", "not reproduced")
        assert experiment["title"] in report and f"**Here: {experiment['verdict']}.**" in report
        assert len(experiment["methods"]) >= 2
        for stat in experiment["methods"].values():
            assert stat["n"] >= 3 and len(stat["values"]) == stat["n"]
            assert stat["mean"] == pytest.approx(sum(stat["values"]) / stat["n"])
            assert f"{stat['mean']:.3f} ± {stat['std']:.3f}" in report
        for plot in results["plots"][name]:
            assert plot in pngs and (out / plot).stat().st_size > 1000
    assert {"scas_bars.png", "dmc_scatter.png", "ogls_sd_curves.png", "camopd_accuracy.png"} <= set(pngs)
    assert not (out / "_runs").exists()  # scratch trainer directories are cleaned up


def test_quick_lab_numbers_are_consistent(quick_report):
    _, results = quick_report
    scas = results["experiments"]["scas"]
    assert set(scas["teacher_accuracy"]) == set(scas["teacher_shares"]["SCAS (once)"]) | set(scas["teacher_accuracy"])
    assert len(scas["teacher_accuracy"]) >= 4
    for shares in scas["teacher_shares"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    dmc = results["experiments"]["dmc"]
    assert len(dmc["scatter"]) >= 4
    dmc_values = [p["dmc"] for p in dmc["scatter"]]
    accuracies = [p["accuracy"]["mean"] for p in dmc["scatter"]]
    expected = spearman(dmc_values, accuracies)
    assert (dmc["spearman"] is None and math.isnan(expected)) or dmc["spearman"] == pytest.approx(expected)
    camopd = results["experiments"]["camopd"]
    for name, by_ability in camopd["by_ability"].items():
        mean = [(g + d) / 2 for g, d in zip(by_ability["general"]["values"], by_ability["domain"]["values"])]
        assert camopd["methods"][name]["values"] == pytest.approx(mean)
    quantification = results["experiments"]["quantification"]
    for row in quantification["similarity"].values():
        for cell in row.values():
            assert 1.0 <= cell["rse"] <= 5.0 and cell["forward_kl"] >= 0
