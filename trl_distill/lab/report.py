"""The lab report: `results.json`, PNG plots (matplotlib), `report.md`, and a summary table for the terminal."""

import json
import math
import os
import textwrap
import time

from .experiments.verdicts import NO_MECHANISM, REFERENCE_LINE


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str, results: dict) -> None:
    with open(path, "w") as f:
        json.dump(_clean(results), f, indent=1, sort_keys=False)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


BAR_CAPTION = (
    "Bars: mean over seeds; error bars: ± one sample standard deviation across seeds; dots: the individual seeds; "
    "dashed line: the base student before any training; grey square (DMC): the random-dataset choice's spread across "
    "the candidate datasets (± one sample std of the per-dataset means)."
)
SUMMARY_CAPTION = (
    "Each panel: one experiment's method (orange), baselines (blue) and reference lines outside the claim (grey), "
    "mean over seeds with ± one standard error of the mean (the unit of the verdict rule); dashed line: the base student. ✓/✗: whether each precondition, measured "
    "before the comparison, is met."
)


def _title(ax, text: str, width: int = 48, fontsize: int = 10) -> None:
    """A title wrapped to the axes' width, so it is never cut off."""
    ax.set_title(textwrap.fill(text, width), fontsize=fontsize)


def _base_line(ax, base, label="base student") -> None:
    if base is not None:
        ax.axhline(base, ls="--", lw=1.2, color="#555555", label=f"{label} ({base:.3f})", zorder=1)


def bar_plot(
    path: str, title: str, metric: str, methods: dict, base=None, base_label="base student", spread=None
) -> None:
    """Mean per method with ± std error bars, the individual seeds as dots, and the base student as a dashed line.

    `spread` (method -> summary) adds a second, grey error bar beside a bar: e.g. the spread of a random dataset
    choice across the candidate datasets, which the seeds' spread does not show."""
    plt = _pyplot()
    names = list(methods)
    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * len(names), 3.9))
    means = [methods[n]["mean"] for n in names]
    stds = [methods[n]["std"] for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=5, color="#8fb3d9", edgecolor="#2d5b8a", zorder=2)
    for i, n in enumerate(names):
        ax.scatter([i] * len(methods[n]["values"]), methods[n]["values"], color="#2d5b8a", s=12, zorder=3)
    for k, (n, stat) in enumerate((spread or {}).items()):
        i = names.index(n)
        ax.errorbar(
            [i + 0.28], [stat["mean"]], yerr=[stat["std"]], fmt="s", color="#777777", capsize=4, ms=4, zorder=3,
            label=f"{n}: ± std across the {stat['n']} datasets" if k == 0 else None,
        )  # fmt: skip
    _base_line(ax, base, base_label)
    ax.set_xticks(range(len(names)), [textwrap.fill(n, 16) for n in names], fontsize=8)
    ax.set_ylabel(metric)
    if base is not None or spread:
        ax.legend(fontsize=7, loc="upper right")  # in the headroom below: a bar may end anywhere, low or high
    top = max(
        [m + sd for m, sd in zip(means, stds)] + [v for n in names for v in methods[n]["values"]] + [base or 0.0]
    )
    headroom = 1.35 if base is not None or spread else 1.15
    ax.set_ylim(0.0, headroom * top if top > 0 else 1.0)  # every metric here is ≥ 0; bars start at zero
    _title(ax, title, width=int(10 * (2.2 + 1.5 * len(names))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped_bar_plot(path: str, title: str, by_ability: dict, start: dict) -> None:
    """General and domain accuracy per method (CaMOPD), with the specialised starting point as dashed lines."""
    plt = _pyplot()
    names = list(by_ability)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for j, (ability, color) in enumerate((("general", "#8fb3d9"), ("domain", "#e6b87d"))):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        ax.bar(
            xs, [by_ability[n][ability]["mean"] for n in names], width, yerr=[by_ability[n][ability]["std"] for n in names],
            capsize=4, color=color, label=f"{ability} accuracy",
        )  # fmt: skip
        ax.axhline(start[ability], ls="--", lw=1.2, color=color, label=f"{ability}, base (specialised) student")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("test accuracy")
    _title(ax, title, width=70)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def place_labels(fig, ax, labels: list, bars: list[tuple]) -> None:
    """Puts each point label on the first side of its point (right, left; above, below, further below) where it
    covers no other point's error bar and no label placed before it. `bars`: `(x, low, high)` per point."""
    fig.canvas.draw()  # settles the axis limits (autoscaling is lazy), so data maps to the pixels drawn
    renderer = fig.canvas.get_renderer()
    segments = [(ax.transData.transform((x, low)), ax.transData.transform((x, high))) for x, low, high in bars]
    sides = [((6, 4), "left"), ((-6, 4), "right"), ((6, -11), "left"), ((-6, -11), "right"), ((6, -22), "left")]
    placed = []
    for i, label in enumerate(labels):
        for offset, align in sides:
            label.xyann = offset
            label.set_horizontalalignment(align)
            box = label.get_window_extent(renderer).expanded(1.05, 1.2)
            crossed = any(
                box.x0 <= a[0] <= box.x1 and min(a[1], b[1]) <= box.y1 and max(a[1], b[1]) >= box.y0
                for j, (a, b) in enumerate(segments)
                if j != i
            )
            if not crossed and not any(box.overlaps(other) for other in placed):
                break
        placed.append(label.get_window_extent(renderer))


def scatter_plot(path: str, points: list[dict], rho) -> None:
    """DMC at step 0 against accuracy after SFT on each candidate dataset."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs, ys = [p["dmc"] for p in points], [p["accuracy"]["mean"] for p in points]
    labels = []
    for i, p in enumerate(points):
        ax.errorbar(xs[i], ys[i], yerr=p["accuracy"]["std"], fmt="o", capsize=4)
        labels.append(ax.annotate(p["dataset"], (xs[i], ys[i]), fontsize=8, xytext=(6, 4), textcoords="offset points"))
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("DMC at step 0 (higher = more compatible)")
    ax.set_ylabel("test accuracy after SFT (± std over seeds)")
    rho_text = "undefined" if rho is None or (isinstance(rho, float) and math.isnan(rho)) else f"{rho:+.2f}"
    _title(ax, f"DMC vs accuracy, one point per candidate dataset (Spearman ρ = {rho_text})", width=55)
    fig.tight_layout()  # before the labels are placed: it moves the axes
    stds = [p["accuracy"]["std"] for p in points]
    place_labels(fig, ax, labels, [(x, y - e, y + e) for x, y, e in zip(xs, ys, stds)])
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(ax, curves: dict, colors: dict) -> None:
    for name, runs in curves.items():
        color = colors[name]
        for run in runs:
            if run:
                ax.plot([s for s, _ in run], [v for _, v in run], color=color, alpha=0.25, lw=1)
        steps = sorted({s for run in runs for s, _ in run})
        mean = [
            sum(v for run in runs for s2, v in run if s2 == s) / max(1, sum(s2 == s for run in runs for s2, _ in run))
            for s in steps
        ]
        ax.plot(steps, mean, color=color, lw=2, label=name)


def curve_plot(path: str, title: str, curves: dict, ylabel: str, review_steps=None) -> None:
    """Mean curve per method over seeds (thin lines: each seed); `review_steps` shaded (CaMOPD's domain reviews)."""
    loss_plot(path, title, {ylabel: curves}, review_steps)


def loss_plot(path: str, title: str, groups: dict, review_steps=None) -> None:
    """One axis per group `{y label: {method: [run, ...]}}`, so losses of different kinds never share an axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 3.9), squeeze=False)
    names = [name for curves in groups.values() for name in curves]
    colors = {name: f"C{k}" for k, name in enumerate(names)}
    for ax, (ylabel, curves) in zip(axes[0], groups.items()):
        _curves(ax, curves, colors)
        for k, step in enumerate(review_steps or []):
            ax.axvline(step, color="#d9822b", ls=":", lw=1.2, label="CaMOPD review step" if k == 0 else None)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 75 + 75 * (len(groups) - 1)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmap_plot(path: str, table: dict, key: str, label: str, higher_is_similar: bool, seed, marked=None) -> None:
    """Students (rows) against teachers (columns). Brighter always means *more similar* (reversed map for a
    divergence); `marked` (student -> teacher) outlines each student's training teacher."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    students = list(table)
    teachers = list(next(iter(table.values())))
    values = [[table[s][t][key] for t in teachers] for s in students]
    fig, ax = plt.subplots(figsize=(3.4 + 1.5 * len(teachers), 1.9 + 0.55 * len(students)))
    cmap = "viridis" if higher_is_similar else "viridis_r"
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    low, high = min(min(r) for r in values), max(max(r) for r in values)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            bright = (v - low) / (high - low + 1e-12)
            bright = bright if higher_is_similar else 1 - bright
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="black" if bright > 0.6 else "white", fontsize=8)
    for i, student in enumerate(students):
        if marked and student in marked and marked[student] in teachers:
            j = teachers.index(marked[student])
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_xticks(range(len(teachers)), teachers, fontsize=7, rotation=20, ha="right")
    ax.set_yticks(range(len(students)), students, fontsize=7)
    ax.set_xlabel("teacher")
    ax.set_ylabel("student")
    direction = "higher" if higher_is_similar else "lower"
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"{label}\n({direction} = more similar)", fontsize=8)
    _title(ax, f"{label}, students × teachers (students from seed {seed}; red box: training teacher)", width=60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _base(r: dict):
    """The base student's value of an experiment's metric (accuracy, or ICE Strict), when it has one."""
    return r.get("base_student_accuracy", r.get("base_student"))


SHORT = {
    "scas": "SCAS",
    "dmc": "DMC",
    "ogls_sd": "OGLS-SD",
    "camopd": "CaMOPD",
    "quantification": "RSE / ICE",
    "real_scas": "Real SCAS",
}


def summary_plot(path: str, results: dict) -> None:
    """The report's opening figure: every experiment's method vs baselines (mean ± one standard error) and its
    preconditions ticked."""
    plt = _pyplot()
    experiments = results["experiments"]
    n = len(experiments)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    if n < rows * cols:  # the spare panel: what the marks mean and every precondition
        lines = [
            "orange: the method; blue: its baselines; grey: reference lines",
            "error bars: ± one standard error of the mean",
            "",
        ]
        for name, r in experiments.items():
            for p in r.get("preconditions", []):
                mark = "·" if p["met"] is None else ("✓" if p["met"] else "✗")
                lines.append(
                    f"{mark} {SHORT.get(name, name)}: " + textwrap.shorten(p["name"], 48) + f" = {p['value']:+.3f}"
                )
        axes.flat[-1].text(
            0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=7, transform=axes.flat[-1].transAxes
        )
    for ax, (name, r) in zip(axes.flat, experiments.items()):
        methods = r["methods"]
        compared = {c["method"] for c in r["comparisons"]}
        labels = list(methods)
        for i, m in enumerate(labels):
            stat = methods[m]
            se = stat["std"] / math.sqrt(stat["n"]) if stat["n"] else 0.0
            reference = m in r.get("reference_lines", ())
            color = "#d9822b" if m in compared else "#999999" if reference else "#2d5b8a"
            ax.errorbar([i], [stat["mean"]], yerr=[se], fmt="o", color=color, capsize=5, ms=6)
        _base_line(ax, _base(r))
        ticks = [m + (" (reference)" if m in r.get("reference_lines", ()) else "") for m in labels]
        ax.set_xticks(range(len(labels)), [textwrap.fill(m, 12) for m in ticks], fontsize=6.5)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(textwrap.fill(r["metric"], 30), fontsize=8)
        ticks = "  ".join(("✓" if p["met"] else "✗") for p in r.get("preconditions", []) if p["met"] is not None)
        ax.set_title(f"{SHORT.get(name, name)}: {r['verdict']}\npreconditions {ticks or '—'}", fontsize=9)
        if _base(r) is not None:
            ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_plots(output_dir: str, results: dict) -> dict[str, list[str]]:
    """Every plot of the report; returns the file names per experiment (`"summary"`: the opening figure)."""
    plots: dict[str, list[str]] = {}
    if results["experiments"]:
        summary_plot(os.path.join(output_dir, "summary.png"), results)
        plots["summary"] = ["summary.png"]
    for name, r in results["experiments"].items():
        plots[name] = experiment_plots(output_dir, name, r)
    return plots


def experiment_plots(output_dir: str, name: str, r: dict) -> list[str]:
    """The plots of experiment `name` (its results `r`): its bars, and its scatter, curves or heatmaps where it has
    them; returns their file names."""
    files: list[str] = []

    def add(filename, fn, *args, **kwargs):
        fn(os.path.join(output_dir, filename), *args, **kwargs)
        files.append(filename)

    if name == "camopd":
        add(f"{name}_accuracy.png", grouped_bar_plot, r["title"], r["by_ability"], r["start"])
    else:
        spread = {"random candidate": r["random_dataset_spread"]} if "random_dataset_spread" in r else None
        add(f"{name}_bars.png", bar_plot, r["title"], r["metric"], r["methods"], base=_base(r), spread=spread)
    if name == "dmc":
        add("dmc_scatter.png", scatter_plot, r["scatter"], r["spearman"])
    if "curves" in r:
        _curve_plots(add, name, r)
    if name == "quantification" and r["similarity"]:
        marked = {s: t["teacher"] for s, t in r.get("traced", {}).items()}
        seed = r.get("similarity_seed")
        add("quantification_rse.png", heatmap_plot, r["similarity"], "rse", "automatic RSE (1–5)", True, seed, marked)
        add(
            "quantification_kl.png", heatmap_plot, r["similarity"], "forward_kl", "token KL(teacher ‖ student)",
            False, seed, marked,
        )  # fmt: skip
    return files


def _curve_plots(add, name: str, r: dict) -> None:
    """The dev-accuracy curves and the loss curves of an experiment that records them (CaMOPD's review steps
    dotted)."""
    reviews = next(iter(r.get("review_steps", {}).get("CaMOPD", [])), None)
    add(
        f"{name}_curves.png",
        curve_plot,
        f"{r['title']}: dev accuracy during training (thick: mean over seeds; thin: each seed)",
        r["curves"],
        "dev accuracy",
        review_steps=reviews,
    )
    groups = {}
    for method, runs in r["loss_curves"].items():
        kind = "SFT cross-entropy (nats/token)" if method.startswith("SFT") else "distillation loss (divergence)"
        groups.setdefault(kind, {})[method] = runs
    add(
        f"{name}_loss.png",
        loss_plot,
        f"{r['title']}: training loss (thick: mean over seeds; thin: each seed)"
        + ("; dotted: CaMOPD's review steps (seed 0)" if reviews else ""),
        groups,
        review_steps=reviews,
    )


def label(r: dict, method: str) -> str:
    """A method's name in the tables, marked when the experiment shows it only as a reference line (`reference_lines`):
    printed beside the compared methods, but no part of the verdict."""
    return f"{method} ({REFERENCE_LINE})" if method in r.get("reference_lines", ()) else method


def _met(p: dict) -> str:
    return "printed" if p["met"] is None else ("met" if p["met"] else "NOT MET")


def summary_table(results: dict) -> str:
    """Per experiment: its preconditions, one line per method, and its verdict."""
    lines = []
    width = max([len(label(r, m)) for r in results["experiments"].values() for m in r["methods"]] + [20])
    if any("secondary" in r for r in results["experiments"].values()):
        width = max(width, len("base model (no training)"))
    for r in results["experiments"].values():
        lines.append(f"{r['title']}  [{r['metric']}]")
        for p in r.get("preconditions", []):
            lines.append(f"  precondition: {p['name']} = {p['value']:+.3f}, needs {p['threshold']}: {_met(p)}")
        for method, stat in r["methods"].items():
            lines.append(f"  {label(r, method):<{width}}  {fmt(stat)}  (n={stat['n']})")
        if _base(r) is not None and "secondary" in r:
            lines.append(f"  {'base model (no training)':<{width}}  {_base(r):.3f}")
        secondary = r.get("secondary")
        if secondary:  # a second metric of the same runs, printed, not judged
            lines.append(f"  {secondary['metric']}:")
            for method, stat in secondary["methods"].items():
                lines.append(f"  {method:<{width}}  {fmt(stat)}  (n={stat['n']})")
            lines.append(f"  {'base model (no training)':<{width}}  {secondary['base']:.3f}")
        if r["verdict"] == NO_MECHANISM:
            lines.append("  -> NO MECHANISM HERE (a precondition is not met): the claim cannot show in this world")
        else:
            lines.append(f"  -> paper's claim {r['verdict'].upper()} here")
    if results.get("timings"):
        lines += ["", *timing_table(results["timings"])]
    return "\n".join(lines)


def timing_table(timings: dict) -> list[str]:
    """The per-phase wall times of a run (start-up, pre-training, each experiment's phases, the report), with their
    total, one line each."""
    width = max(len(phase) for phase in timings)
    lines = ["Timings (wall seconds per phase)"]
    lines += [f"  {phase:<{width}}  {seconds:7.1f}" for phase, seconds in timings.items()]
    lines.append(f"  {'total':<{width}}  {sum(timings.values()):7.1f}")
    return lines


def write_markdown(path: str, results: dict, plots: dict) -> None:
    """Writes `report.md`: the header and the table of verdicts, one section per experiment, and the timings."""
    out = _markdown_header(results, plots)
    for name, r in results["experiments"].items():
        out += _markdown_section(r, plots.get(name, []), name)
    timings = results["timings"]
    out += ["", "## Timings (seconds)", "", "| phase | seconds |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in timings.items()]
    out += [f"| **total** | {round(sum(timings.values()), 2)} |"] if timings else []
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _markdown_header(results: dict, plots: dict) -> list[str]:
    """The report's opening: the summary figure, the preset, how to read a verdict, and one row per experiment."""
    preset = results["preset"]
    # a tiny-world preset's size names its models; a `--real` run's names the real checkpoint
    models = f"`{preset['size']}`" if "(real)" in preset["size"] else f"tiny `{preset['size']}` models"
    out = [
        "# trl-distill lab report",
        "",
        *(
            ["![summary of the five experiments](summary.png)", "", f"*{SUMMARY_CAPTION}*", ""]
            if "summary" in plots
            else []
        ),
        f"Preset `{preset['name']}`: {len(preset['seeds'])} seeds {list(preset['seeds'])}, {models}, "
        f"{preset['pool_prompts']} training prompts, {preset['eval_prompts']} test prompts. Wall time "
        f"{results['wall_seconds']:.0f} s. Every number below is computed by `trl-distill lab` in this run "
        "(mean ± sample std over seeds); the verdicts are computed from them, not written by hand. Numbers vary by "
        "machine (thread counts and kernels change floating-point sums); the verdicts are what to compare.",
        "",
        "Each experiment first measures its **preconditions**, the presence of the mechanism its paper relies on, "
        "before any method is compared. When a precondition is not met, the verdict is *no mechanism here*: the claim "
        "cannot show in this world, whatever the comparison says. Otherwise a verdict is *reproduced* when the method "
        "beats its baseline by more than one standard error of the difference of means, *inconclusive* when it is "
        "better by less, *not reproduced* when it is not better. Tiny models trained for seconds are not the papers' "
        "setting: a claim that does not reproduce here is not refuted.",
        "",
        *(
            [
                f"**This is the `{preset['name']}` preset, a smoke test of every trainer: its models are pre-trained too briefly "
                "for its verdicts to be evidence either way. Run `trl-distill lab` (the default preset) for those.**",
                "",
            ]
            if preset["name"] in ("smoke", "quick")
            else []
        ),
        "| experiment | claim | preconditions | verdict |",
        "|---|---|---|---|",
    ]
    for r in results["experiments"].values():
        met = [p["met"] for p in r.get("preconditions", []) if p["met"] is not None]
        out.append(f"| {r['title']} | {r['claim']} | {sum(met)} of {len(met)} met | **{r['verdict']}** |")
    return out


def _stat_rows(methods: dict, name=lambda method: method) -> list[str]:
    """One table row per method: its mean ± std and its value on each seed."""
    return [
        f"| {name(method)} | {fmt(stat)} | {', '.join(f'{v:.3f}' for v in stat['values'])} |"
        for method, stat in methods.items()
    ]


def _markdown_section(r: dict, plots: list[str], name: str) -> list[str]:
    """One experiment's section: its claim, preconditions, verdict, methods, comparisons, notes and plots."""
    out = ["", f"## {r['title']}", "", f"**Claim.** {r['claim']}", ""]
    out += ["**Preconditions** (measured before the methods are compared):", ""]
    out += ["| precondition | measured | needs | |", "|---|---|---|---|"]
    for p in r.get("preconditions", []):
        out.append(f"| {p['name']} | {p['value']:+.3f} | {p['threshold']} | **{_met(p)}** |")
    out.append("")
    for p in r.get("preconditions", []):
        out.append(f"- *{p['name']}*: {p['how']}" + (f" ({p['detail']})" if p.get("detail") else ""))
    out += ["", f"**Here: {r['verdict']}.**", ""]
    out += [f"| method | {r['metric']} | seeds |", "|---|---|---|"]
    out += _stat_rows(r["methods"], lambda method: label(r, method))
    secondary = r.get("secondary")
    if secondary:
        out += ["", f"| method | {secondary['metric']} | seeds |", "|---|---|---|"]
        out += _stat_rows(secondary["methods"])
        out.append(f"| base model (no training) | {secondary['base']:.3f} | |")
    out += ["", "| method | baseline | difference | standard error | verdict |", "|---|---|---|---|---|"]
    for c in r["comparisons"]:
        out.append(
            f"| {c['method']} | {c['baseline']} | {c['difference']:+.3f} | {c['standard_error']:.3f} | {c['verdict']} |"
        )
    out.append("")
    out += [f"- {note}" for note in r.get("notes", [])]
    out.append("")
    for f in plots:
        out += [f"![{f}]({f})", "", f"*{CAPTIONS.get(f.removeprefix(name + '_'), '')}*", ""]
    return out


CAPTIONS = {
    "bars.png": BAR_CAPTION,
    "accuracy.png": "Bars: mean over seeds; error bars: ± one sample standard deviation across seeds; dashed lines: "
    "the specialised student before recovery.",
    "scatter.png": "One point per candidate dataset; error bars: ± one sample standard deviation across seeds.",
    "curves.png": "Thick line: mean over seeds; thin lines: each seed.",
    "loss.png": "Thick line: mean over seeds; thin lines: each seed. SFT's cross-entropy and the on-policy methods' "
    "divergence are on separate axes (they are different quantities).",
    "rse.png": "Automatic RSE of each student (rows) against each teacher (columns); brighter = more similar; red box: "
    "the teacher the student was distilled from.",
    "kl.png": "Token KL(teacher ‖ student) on the teachers' answers; brighter = more similar (lower KL), the same "
    "meaning as the RSE map; red box: the teacher the student was distilled from.",
}


def write_report(output_dir: str, results: dict) -> dict:
    """Writes `results.json`, the plots and `report.md` into `output_dir`; returns the plot names per experiment."""
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    plots = make_plots(output_dir, results)
    results.setdefault("timings", {})["Lab: report and plots"] = round(time.perf_counter() - start, 2)
    results["plots"] = plots
    write_json(os.path.join(output_dir, "results.json"), results)
    write_markdown(os.path.join(output_dir, "report.md"), results, plots)
    return plots
