"""`trl-distill lab` end to end (every trainer of the package on the tiny world), its preconditions, progress output
and report, and the lab's statistics.

The default suite runs the `smoke` preset (every experiment, few steps); the full `--quick` run is `-m slow`.
"""

import io
import json
import logging
import math
import os

import pytest

from trl_distill.lab.experiments import EXPERIMENTS
from trl_distill.lab.experiments.common import Phase
from trl_distill.lab.experiments.verdicts import NO_MECHANISM, above, compare, gated, precondition, spearman, summary


VERDICTS = ("reproduced", "partly reproduced", "inconclusive", "not reproduced", NO_MECHANISM)


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


def test_a_failed_precondition_gates_the_verdict():
    met = precondition("gain", 0.2, "> 0.1", True, "by hand")
    failed = precondition("gain", -0.1, "> 0.1", False, "by hand")
    printed = precondition("spread", 0.5, "printed, no threshold", None, "by hand")
    assert gated("reproduced", [met, printed]) == "reproduced"  # a printed measurement gates nothing
    assert gated("reproduced", [met, failed]) == NO_MECHANISM
    assert gated("not reproduced", [failed]) == NO_MECHANISM  # not "not reproduced": the claim could not show
    assert met == {"name": "gain", "value": 0.2, "threshold": "> 0.1", "met": True, "how": "by hand", "detail": ""}
    with pytest.raises(ValueError, match="non-finite"):
        precondition("gain", float("nan"), "> 0", True, "by hand")


def test_above_a_fixed_reference_uses_the_standard_error_of_the_mean():
    stat = summary([0.5, 0.6, 0.7])  # std 0.1, standard error 0.1/√3 ≈ 0.0577
    assert above(stat, 0.5) == pytest.approx(
        {"difference": 0.1, "standard_error": 0.1 / math.sqrt(3), "verdict": "reproduced"}
    )
    assert above(stat, 0.55)["verdict"] == "inconclusive"  # 0.05 < 0.0577
    assert above(stat, 0.6)["verdict"] == "not reproduced"


def test_ogls_sd_is_judged_against_opsd_alone():
    from trl_distill.lab.experiments.ogls_sd import ogls_sd_verdict

    # the default run's recorded numbers (docs/lab.md): v2 0.260 ± 0.012, OPSD 0.130 ± 0.037, SFT 0.253 ± 0.024
    ogls, opsd, sft = summary([0.248, 0.260, 0.272]), summary([0.093, 0.130, 0.167]), summary([0.229, 0.253, 0.277])
    against_opsd = compare(ogls, opsd)
    assert against_opsd["verdict"] == "reproduced"  # +0.130 against a standard error of 0.0225
    assert compare(ogls, sft)["verdict"] == "inconclusive"  # once half the verdict; now a reference line only
    assert ogls_sd_verdict(against_opsd, stable=True) == "reproduced"
    assert ogls_sd_verdict(against_opsd, stable=False) == "partly reproduced"  # the win without the stability
    # stability alone is no win: a loss to OPSD stays a loss, a win within one standard error stays inconclusive
    assert ogls_sd_verdict(compare(opsd, ogls), stable=True) == "not reproduced"
    assert ogls_sd_verdict(compare(summary([0.27, 0.28, 0.29]), summary([0.25, 0.27, 0.29])), True) == "inconclusive"


def test_a_reference_line_is_labelled_and_left_out_of_the_comparisons(tmp_path):
    from trl_distill.lab.report import summary_table, write_report

    results = _fake_results()
    toy = results["experiments"]["toy"]
    toy["methods"]["SFT on references"] = summary([0.55, 0.6, 0.65])
    toy["reference_lines"] = ["SFT on references"]
    write_report(str(tmp_path), results)
    label = "SFT on references (reference line, not part of the claim)"
    assert f"| {label} | 0.600 ± 0.050 | 0.550, 0.600, 0.650 |" in (tmp_path / "report.md").read_text()
    assert f"  {label}  0.600 ± 0.050  (n=3)" in summary_table(results)
    assert "  method " in summary_table(results)  # the compared methods keep their names


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_phase_prints_one_line_when_not_a_terminal(monkeypatch, tty):
    out, err = _Stream(tty), _Stream(tty)
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    timings = {}
    with Phase("a phase", 200, timings) as bar:
        for _ in range(200):
            bar.update(1)
    assert timings["a phase"] >= 0
    if tty:  # a live bar on the terminal, and no extra line
        assert "a phase" in err.getvalue() and out.getvalue() == ""
    else:  # no bar redraws at all, one line
        assert err.getvalue() == ""
        assert out.getvalue().splitlines() == [f"a phase: done in {timings['a phase']:.1f} s"]


def test_silenced_bars_are_restored():
    from tqdm.auto import tqdm

    from trl_distill.lab.progress import silence_other_bars

    stream = io.StringIO()
    restore = silence_other_bars()
    try:
        assert tqdm(total=3, file=stream).disable
        assert not tqdm(total=3, file=stream, disable=False).disable  # an explicit choice still wins
    finally:
        restore()
    assert not tqdm(total=3, file=stream).disable


def _fake_results() -> dict:
    def stat(values):
        return summary(values)

    experiment = {
        "title": "A toy experiment",
        "claim": "The method beats the baseline.",
        "metric": "test accuracy",
        "methods": {"method": stat([0.5, 0.6, 0.7]), "baseline": stat([0.4, 0.45, 0.5])},
        "comparisons": [
            {"method": "method", "baseline": "baseline", **compare(stat([0.5, 0.6, 0.7]), stat([0.4, 0.45, 0.5]))}
        ],
        "base_student_accuracy": 0.3,
        "preconditions": [
            precondition("mechanism strength", -0.25, "> 0.05", False, "built by hand for the test"),
            precondition("spread", 0.125, "printed, no threshold", None, "also by hand", detail="10th–90th 0.1–0.2"),
        ],
        "notes": ["a note"],
    }
    experiment["verdict"] = gated(experiment["comparisons"][0]["verdict"], experiment["preconditions"])
    return {
        "preset": {"name": "smoke", "seeds": [0, 1, 2], "size": "xs", "pool_prompts": 8, "eval_prompts": 4},
        "experiments": {"toy": experiment},
        "timings": {"phase": 1.0},
        "wall_seconds": 1.0,
    }


def test_report_prints_every_precondition_before_the_comparison(tmp_path):
    from trl_distill.lab.report import summary_table, write_report

    results = _fake_results()
    plots = write_report(str(tmp_path), results)
    report = (tmp_path / "report.md").read_text()
    assert report.index("![summary of the five experiments](summary.png)") < report.index("## A toy experiment")
    section = report[report.index("## A toy experiment") :]
    assert (
        section.index("**Preconditions**")
        < section.index("**Here: no mechanism here.**")
        < section.index("| method |")
    )
    assert "| mechanism strength | -0.250 | > 0.05 | **NOT MET** |" in section
    assert "| spread | +0.125 | printed, no threshold | **printed** |" in section
    assert "*mechanism strength*: built by hand for the test" in section and "(10th–90th 0.1–0.2)" in section
    assert "0 of 1 met" in report  # the printed measurement is not counted as a precondition
    assert "error bars: ± one sample standard deviation" in section  # the bar chart's caption defines its error bars
    assert plots == {"summary": ["summary.png"], "toy": ["toy_bars.png"]}
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("summary.png", "toy_bars.png"))
    table = summary_table(results)
    assert "precondition: mechanism strength = -0.250, needs > 0.05: NOT MET" in table
    assert "NO MECHANISM HERE" in table


def test_the_run_ends_with_a_timing_table_of_every_phase_and_their_total(tmp_path):
    from trl_distill.lab.report import summary_table, write_report

    results = _fake_results()
    results["timings"] = {"Lab: start-up (imports, world data)": 2.5, "Toy: training": 4.25}
    write_report(str(tmp_path), results)  # times its own plots into the same table
    report_seconds = results["timings"]["Lab: report and plots"]
    assert report_seconds > 0
    lines = summary_table(results).splitlines()
    table = lines[lines.index("Timings (wall seconds per phase)") + 1 :]
    assert [line.split()[-1] for line in table] == [
        "2.5",
        "4.2",
        f"{report_seconds:.1f}",
        f"{6.75 + report_seconds:.1f}",
    ]
    assert table[0].startswith("  Lab: start-up (imports, world data)") and table[-1].startswith("  total")
    report = (tmp_path / "report.md").read_text()
    assert "| Toy: training | 4.25 |" in report and f"| **total** | {round(6.75 + report_seconds, 2)} |" in report


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    from trl_distill.scripts.lab import main

    out = tmp_path_factory.mktemp("lab-smoke")
    selection = logging.getLogger("trl_distill.scas.selection")
    level = selection.level
    # two threads: every experiment's runs go through the forked workers of `lab.parallel`, as in `make demo`
    assert main(["--preset", "smoke", "--threads", "2", "--output_dir", str(out)]) == 0
    assert selection.level == level  # the lab quiets SCAS's per-run warning while it runs, not after
    with open(out / "results.json") as f:
        return out, json.load(f)


@pytest.mark.timeout(900)  # the whole smoke run happens in the first test's setup; a loaded 2-core CPU needs the time
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_run_of_every_experiment_records_its_preconditions(smoke_report, name):
    out, results = smoke_report
    report = (out / "report.md").read_text()
    experiment = results["experiments"][name]
    preconditions = experiment["preconditions"]
    assert preconditions and any(p["met"] is not None for p in preconditions)
    for p in preconditions:
        assert math.isfinite(p["value"]) and p["threshold"] and len(p["how"]) > 40
        assert p["met"] in (True, False, None)
        assert f"| {p['name']} | {p['value']:+.3f} | {p['threshold']} |" in report
    failed = any(p["met"] is False for p in preconditions)
    assert (experiment["verdict"] == NO_MECHANISM) == failed
    assert experiment["verdict"] in VERDICTS
    section = report[report.index(f"## {experiment['title']}") :]
    assert section.index("**Preconditions**") < section.index(f"**Here: {experiment['verdict']}.**")
    for stat in experiment["methods"].values():
        assert all(math.isfinite(v) for v in stat["values"]) and len(stat["values"]) == stat["n"] >= 2
        assert f"{stat['mean']:.3f} ± {stat['std']:.3f}" in section
    for plot in results["plots"][name]:
        assert (out / plot).stat().st_size > 1000 and f"![{plot}]({plot})" in section
    assert "summary.png" in results["plots"]["summary"] and (out / "summary.png").stat().st_size > 1000
    assert not (out / "_runs").exists()  # scratch trainer directories are cleaned up


def test_smoke_dmc_measures_the_precondition_then_each_claim_apart(smoke_report):
    out, results = smoke_report
    dmc, seeds = results["experiments"]["dmc"], results["preset"]["seeds"]
    names = [row["dataset"] for row in dmc["ranking"]]
    assert sorted(names) == ["cot-noisy", "equation-clean", "verbose-clean"]  # dmc_formula's crossing design
    (stage,) = dmc["preconditions"]  # the first stage of plain SFT on the step-0 choice, one ranking per seed
    assert len(dmc["first_stage_rankings"]) == len(seeds) and stage["met"] is not None
    tops = [table[0]["dataset"] for table in dmc["first_stage_rankings"]]
    moved = sum(top != names[0] for top in tops)
    assert stage["met"] == (moved >= math.ceil(2 * len(seeds) / 3))
    assert f"after the first stage: {', '.join(tops)}" in stage["detail"]
    # static: the DMC pick against a random candidate; dynamic: reselection against the best static candidate
    candidates = [n for n in dmc["methods"] if n in names]  # the design's order (ties go to the first)
    best = max(candidates, key=lambda n: dmc["methods"][n]["mean"])
    assert dmc["pick"] == names[0] and dmc["best_static"] == best
    pairs = [(c["method"], c["baseline"]) for c in dmc["comparisons"]]
    assert pairs == [(names[0], "random candidate"), ("DMCCallback dynamic", f"best static ({best})")]
    random_means = [sum(dmc["methods"][n]["values"][i] for n in names) / len(names) for i in range(len(seeds))]
    assert dmc["methods"]["random candidate"]["values"] == pytest.approx(random_means)
    assert set(dmc["methods"]) == {*names, "random candidate", "DMCCallback static", "DMCCallback dynamic"}
    assert all(m["n"] == len(seeds) for m in dmc["methods"].values())
    dynamic, static = (dmc["callback_weights"][f"DMCCallback {k}"][0] for k in ("dynamic", "static"))
    assert len(static) == 1 and len(dynamic) == results["preset"]["dmc_epochs"]  # one round, or one per stage
    assert sum(dynamic[0].values()) == pytest.approx(1.0)
    if not stage["met"]:
        assert dmc["verdict"] == NO_MECHANISM and set(dmc["claims"].values()) == {NO_MECHANISM}
    report = (out / "report.md").read_text()
    assert f"Static claim (DMC predicts the better student): {dmc['claims']['static']}." in report
    assert f"Dynamic claim (reselection beats the best static candidate, {best}" in report


def test_dmc_overtaking_names_the_capability_each_dataset_needs():
    from trl_distill.lab.experiments.dmc_formula import overtaking

    def table(capability, **rows):
        return [{"dataset": n, "quality": q, "difficulty": d, "capability": capability} for n, (q, d) in rows.items()]

    # b: Q 0.9 > 0.8, 1 − C* = 0.1 / (0.8·4 − 0.9·0.2); e: lower quality, never
    text = overtaking("a", [table(0.4, a=(0.8, 0.2), b=(0.9, 4.0), e=(0.5, 0.1))])
    assert text == "capability at which another dataset would overtake a: b at C > 0.967 (C reached: 0.400)"
    text = overtaking("a", [table(0.4, a=(1.0, 0.2), b=(0.9, 4.0)), table(0.5, a=(1.0, 0.1), b=(0.9, 4.0))])
    assert "no capability C lets one overtake it (C reached: 0.400, 0.500)" in text


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from trl_distill.scripts.lab import main

    out = tmp_path_factory.mktemp("lab")
    assert main(["--quick", "--output_dir", str(out)]) == 0
    with open(out / "results.json") as f:
        return out, json.load(f)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_lab_writes_a_report_with_every_experiment(quick_report):
    out, results = quick_report
    assert list(results["experiments"]) == list(EXPERIMENTS)
    report = (out / "report.md").read_text()
    pngs = [name for name in os.listdir(out) if name.endswith(".png")]
    for name, experiment in results["experiments"].items():
        assert experiment["verdict"] in VERDICTS
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


@pytest.mark.slow
def test_quick_lab_numbers_are_consistent(quick_report):
    _, results = quick_report
    scas = results["experiments"]["scas"]
    assert set(scas["teacher_accuracy"]) == set(scas["teacher_shares"]["SCAS (once)"]) | set(scas["teacher_accuracy"])
    assert len(scas["teacher_accuracy"]) >= 4
    for shares in scas["teacher_shares"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    dmc = results["experiments"]["dmc"]
    assert len(dmc["scatter"]) == 3  # the crossing design's candidates
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


def test_scatter_labels_cover_no_other_label_or_error_bar():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trl_distill.lab.report import place_labels

    # the default run's crowded corner: two points 0.06 apart in DMC with overlapping error bars, and a third nearby
    points = [(0.26, 0.177, 0.012), (0.32, 0.186, 0.016), (0.30, 0.20, 0.01)]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    labels = []
    for name, (x, y, e) in zip(("verbose-strong", "equation-medium", "explained-medium"), points):
        ax.errorbar(x, y, yerr=e, fmt="o")
        labels.append(ax.annotate(name, (x, y), fontsize=8, xytext=(6, 4), textcoords="offset points"))
    ax.set_xlim(0, 1)
    fig.tight_layout()
    bars = [(x, y - e, y + e) for x, y, e in points]
    place_labels(fig, ax, labels, bars)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    for i, box in enumerate(boxes):
        for j, (x, low, high) in enumerate(bars):
            (px, y0), (_, y1) = ax.transData.transform((x, low)), ax.transData.transform((x, high))
            assert j == i or not (box.x0 <= px <= box.x1 and y0 <= box.y1 and y1 >= box.y0)
    plt.close(fig)


def test_a_lab_usage_error_leaves_the_callers_bars_and_warnings_as_they_were(monkeypatch, capsys):
    import tqdm.std

    from trl_distill.lab import progress
    from trl_distill.scripts.lab import main

    monkeypatch.setattr(progress, "interactive", lambda: False)  # as in CI logs: the lab silences other bars
    init = tqdm.std.tqdm.__dict__["__init__"]
    selection = logging.getLogger("trl_distill.scas.selection")
    level = selection.level
    with pytest.raises(SystemExit):
        main(["--experiments", "nonexistent"])
    assert "unknown experiment 'nonexistent'" in capsys.readouterr().err
    assert tqdm.std.tqdm.__dict__["__init__"] is init and selection.level == level
