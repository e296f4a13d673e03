"""The lab report: `results.json`, PNG plots (matplotlib), `report.md`, and a summary table for the terminal."""

import json
import math
import os


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


def bar_plot(path: str, title: str, metric: str, methods: dict) -> None:
    """Mean per method with ± std error bars and the individual seeds as dots."""
    plt = _pyplot()
    names = list(methods)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(names), 3.6))
    means = [methods[n]["mean"] for n in names]
    stds = [methods[n]["std"] for n in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=5, color="#8fb3d9", edgecolor="#2d5b8a")
    for i, n in enumerate(names):
        ax.scatter([i] * len(methods[n]["values"]), methods[n]["values"], color="#2d5b8a", s=12, zorder=3)
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped_bar_plot(path: str, title: str, by_ability: dict, start: dict) -> None:
    """General and domain accuracy per method (CaMOPD), with the specialised starting point as dashed lines."""
    plt = _pyplot()
    names = list(by_ability)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.38
    for j, (ability, color) in enumerate((("general", "#8fb3d9"), ("domain", "#e6b87d"))):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        ax.bar(
            xs, [by_ability[n][ability]["mean"] for n in names], width, yerr=[by_ability[n][ability]["std"] for n in names],
            capsize=4, color=color, label=f"{ability} accuracy",
        )  # fmt: skip
        ax.axhline(start[ability], ls="--", lw=1, color=color, label=f"{ability}, before recovery")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scatter_plot(path: str, points: list[dict], rho) -> None:
    """DMC at step 0 against accuracy after SFT on each candidate dataset."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for p in points:
        ax.errorbar(p["dmc"], p["accuracy"]["mean"], yerr=p["accuracy"]["std"], fmt="o", capsize=4)
        ax.annotate(
            p["dataset"], (p["dmc"], p["accuracy"]["mean"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("DMC at step 0")
    ax.set_ylabel("test accuracy after SFT")
    rho_text = "undefined" if rho is None or (isinstance(rho, float) and math.isnan(rho)) else f"{rho:+.2f}"
    ax.set_title(f"DMC vs accuracy (Spearman ρ = {rho_text})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_plot(path: str, title: str, curves: dict, ylabel: str) -> None:
    """Mean curve per method over seeds (thin lines: each seed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k, (name, runs) in enumerate(curves.items()):
        color = f"C{k}"
        for run in runs:
            if run:
                ax.plot([s for s, _ in run], [v for _, v in run], color=color, alpha=0.25, lw=1)
        steps = sorted({s for run in runs for s, _ in run})
        mean = [
            sum(v for run in runs for s2, v in run if s2 == s) / max(1, sum(s2 == s for run in runs for s2, _ in run))
            for s in steps
        ]
        ax.plot(steps, mean, color=color, lw=2, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmap_plot(path: str, table: dict, key: str, title: str) -> None:
    """Students (rows) against teachers (columns)."""
    plt = _pyplot()
    students = list(table)
    teachers = list(next(iter(table.values())))
    values = [[table[s][t][key] for t in teachers] for s in students]
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(teachers), 1.2 + 0.6 * len(students)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(len(teachers)), teachers, fontsize=7, rotation=20)
    ax.set_yticks(range(len(students)), students, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_plots(output_dir: str, results: dict) -> dict[str, list[str]]:
    """Every plot of the report; returns the file names per experiment."""
    plots: dict[str, list[str]] = {}
    for name, r in results["experiments"].items():
        files: list[str] = []

        def add(filename, fn, *args, files=files):
            fn(os.path.join(output_dir, filename), *args)
            files.append(filename)

        if name == "camopd":
            add(f"{name}_accuracy.png", grouped_bar_plot, r["title"], r["by_ability"], r["start"])
        else:
            add(f"{name}_bars.png", bar_plot, r["title"], r["metric"], r["methods"])
        if name == "dmc":
            add("dmc_scatter.png", scatter_plot, r["scatter"], r["spearman"])
        if "curves" in r:
            add(
                f"{name}_curves.png",
                curve_plot,
                f"{r['title']}: dev accuracy during training",
                r["curves"],
                "dev accuracy",
            )
            add(f"{name}_loss.png", curve_plot, f"{r['title']}: training loss", r["loss_curves"], "loss")
        if name == "quantification" and r["similarity"]:
            add(
                "quantification_rse.png",
                heatmap_plot,
                r["similarity"],
                "rse",
                "automatic RSE (1–5), student vs teacher",
            )
            add("quantification_kl.png", heatmap_plot, r["similarity"], "forward_kl", "token KL(teacher ‖ student)")
        plots[name] = files
    return plots


def summary_table(results: dict) -> str:
    """One line per method of every experiment, and each experiment's verdict."""
    lines = []
    width = max([len(m) for r in results["experiments"].values() for m in r["methods"]] + [20])
    for r in results["experiments"].values():
        lines.append(f"{r['title']}  [{r['metric']}]")
        for method, stat in r["methods"].items():
            lines.append(f"  {method:<{width}}  {fmt(stat)}  (n={stat['n']})")
        lines.append(f"  -> paper's claim {r['verdict'].upper()} here")
    return "\n".join(lines)


def write_markdown(path: str, results: dict, plots: dict) -> None:
    preset = results["preset"]
    out = [
        "# trl-distill lab report",
        "",
        f"Preset `{preset['name']}`: {len(preset['seeds'])} seeds {list(preset['seeds'])}, tiny `{preset['size']}` models, "
        f"{preset['pool_prompts']} training prompts, {preset['eval_prompts']} test prompts. Wall time "
        f"{results['wall_seconds']:.0f} s. Every number below is computed by `trl-distill lab` in this run "
        "(mean ± sample std over seeds); the verdicts are computed from them, not written by hand.",
        "",
        "A verdict is *reproduced* when the method beats its baseline by more than one standard error of the difference "
        "of means, *inconclusive* when it is better by less, *not reproduced* when it is not better. Tiny models trained "
        "for seconds are not the papers' setting: a claim that does not reproduce here is not refuted.",
        "",
        *(
            [
                "**This is the `quick` preset, a smoke test of every trainer: its models are pre-trained too briefly "
                "for its verdicts to be evidence either way. Run `trl-distill lab` (the default preset) for those.**",
                "",
            ]
            if preset["name"] == "quick"
            else []
        ),
        "| experiment | claim | verdict |",
        "|---|---|---|",
    ]
    for r in results["experiments"].values():
        out.append(f"| {r['title']} | {r['claim']} | **{r['verdict']}** |")
    for name, r in results["experiments"].items():
        out += ["", f"## {r['title']}", "", f"**Claim.** {r['claim']}", "", f"**Here: {r['verdict']}.**", ""]
        out += [f"| method | {r['metric']} | seeds |", "|---|---|---|"]
        for method, stat in r["methods"].items():
            out.append(f"| {method} | {fmt(stat)} | {', '.join(f'{v:.3f}' for v in stat['values'])} |")
        out += ["", "| method | baseline | difference | standard error | verdict |", "|---|---|---|---|---|"]
        for c in r["comparisons"]:
            out.append(
                f"| {c['method']} | {c['baseline']} | {c['difference']:+.3f} | {c['standard_error']:.3f} | {c['verdict']} |"
            )
        out.append("")
        out += [f"- {note}" for note in r.get("notes", [])]
        out.append("")
        out += [f"![{f}]({f})" for f in plots.get(name, [])]
    out += ["", "## Timings (seconds)", "", "| phase | seconds |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in results["timings"].items()]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_report(output_dir: str, results: dict) -> dict:
    """Writes `results.json`, the plots and `report.md` into `output_dir`; returns the plot names per experiment."""
    os.makedirs(output_dir, exist_ok=True)
    plots = make_plots(output_dir, results)
    results["plots"] = plots
    write_json(os.path.join(output_dir, "results.json"), results)
    write_markdown(os.path.join(output_dir, "report.md"), results, plots)
    return plots
