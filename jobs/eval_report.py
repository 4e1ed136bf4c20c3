"""The eval report: report.md (the command first, then tables) and its PNG charts, from ``eval_metrics.summarize``.

Charts use matplotlib's Agg backend (no display), small figures at 100 dpi so a report can be committed.
What each number means: docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobs.eval_metrics import ALL, wilson

__all__ = ["format_report", "plot_charts", "CHARTS"]

CHARTS = ("success.png", "reward.png", "behaviour.png")


def format_report(summary: dict, *, command: str, tasks: str, policies: Sequence[str], gate: Sequence[str] | None,
                  wall_s: float) -> str:
    """Markdown of one evaluation. ``policies``: one description line per policy; ``gate``: the failures of the
    gate (empty = passed), None when no threshold was set."""
    names, envs, baseline = summary["policies"], summary["envs"], summary["baseline"]
    out = ["# Evaluation report", "", "Made with:", "", "```bash", command, "```", "",
           f"Tasks: {tasks}. Envs: {', '.join(envs)}. Wall time {wall_s / 60:.1f} min.", "", "Policies:", ""]
    out += [f"- **{name}**: {line}" for name, line in zip(names, policies)]
    out += ["", f"## Results (all envs{'' if len(envs) == 1 else ', pooled'})", ""]
    out += _table(summary, ALL)
    if len(envs) > 1:
        for env in envs:
            out += ["", f"### {env}", ""] + _table(summary, env)
    out += ["", "## Reward breakdown (mean of each component, unweighted)", ""] + _breakdown(summary)
    if summary["pairs"]:
        out += ["", "## Paired comparisons (same tasks)", "",
                "Wins: tasks the later policy solved and the earlier did not; losses: the reverse. McNemar's exact "
                f"test on those discordant tasks. The results table compares every policy with `{baseline}`.", ""]
        out += _paired_table(summary)
    if gate is not None:
        out += ["", "## Gate", ""]
        out += ["**Passed**: every threshold met."] if not gate else ["**Failed** (exit code 1):", ""] + [
            f"- {line}" for line in gate]
    out += ["", "## Charts", "", "![success rate per policy and env](success.png)", "",
            "![reward components per policy](reward.png)", "",
            "![tool-call errors, calls, turns (and safety)](behaviour.png)", "",
            "Metric definitions: docs/evaluation.md. Per-episode numbers: episodes.parquet; whole episodes: "
            "trajectories/<policy>.parquet and transcripts.md.", ""]
    return "\n".join(out)


def plot_charts(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, metrics = summary["policies"], summary["metrics"]
    groups = summary["envs"] + ([ALL] if len(summary["envs"]) > 1 else [])
    paths = []

    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(groups) * len(names) + 1.5), 3.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        cells = [metrics[name][g] for g in groups]
        rates = [c["success"] for c in cells]
        bounds = [wilson(c["solved"], c["episodes"]) for c in cells]
        err = [[r - lo for r, (lo, _) in zip(rates, bounds)], [hi - r for r, (_, hi) in zip(rates, bounds)]]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, rates, width, yerr=err, capsize=3, label=name)
        for x, r, (_, hi) in zip(xs, rates, bounds):
            ax.text(x, hi + 0.02, f"{r:.0%}", ha="center", fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("task success (95% CI)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out_dir / CHARTS[0], plt))

    components = sorted({k for n in names for k in metrics[n][ALL]["components"]})
    keys = ["total"] + components
    fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(keys) * len(names) + 1.5), 3.2))
    for i, name in enumerate(names):
        m = metrics[name][ALL]
        values = [m["mean_reward"]] + [m["components"].get(k, 0.0) for k in components]
        ax.bar([k + (i - (len(names) - 1) / 2) * width for k in range(len(keys))], values, width, label=name)
    ax.set_xticks(range(len(keys)), keys, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("mean per episode")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out_dir / CHARTS[1], plt))

    panels = [("tool_call_error_rate", "tool-call error rate"), ("calls_per_episode", "tool calls per episode"),
              ("mean_turns", "mean turns")]
    if any(metrics[n][ALL]["safety_violation_rate"] is not None for n in names):
        panels.append(("safety_violation_rate", "safety violation rate"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8))
    for ax, (key, title) in zip(axes, panels):
        values = [metrics[n][ALL][key] for n in names]
        ax.bar(range(len(names)), [v or 0.0 for v in values], color=[f"C{i}" for i in range(len(names))])
        for i, v in enumerate(values):
            ax.text(i, (v or 0.0), "n/a" if v is None else f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out_dir / CHARTS[2], plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(summary: dict, env: str) -> list[str]:
    head = ["policy", "success", "mean reward", "tool-call error rate", "calls / episode", "mean turns",
            "truncated", "safety violations"]
    if summary["paired"]:
        head.append(f"vs {summary['baseline']}: wins / losses (p)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in summary["policies"]:
        m = summary["metrics"][name][env]
        lo, hi = wilson(m["solved"], m["episodes"])
        cells = [f"**{name}**", f"{m['success']:.1%} ({m['solved']}/{m['episodes']}; {lo:.0%}–{hi:.0%})",
                 f"{m['mean_reward']:.3f}",
                 "n/a (no calls)" if m["tool_call_error_rate"] is None else
                 f"{m['tool_call_error_rate']:.1%} ({m['tool_call_errors']}/{m['tool_calls']})",
                 f"{m['calls_per_episode']:.2f}", f"{m['mean_turns']:.2f}", f"{m['truncated_rate']:.1%}",
                 "n/a (env has none)" if m["safety_violation_rate"] is None else
                 f"{m['safety_violation_rate']:.1%} ({m['safety_violations']})"]
        if summary["paired"]:
            test = summary["paired"].get(name, {}).get(env)
            cells.append("baseline" if test is None else f"+{test['gained']} / -{test['lost']} "
                                                         f"(p = {test['p_value']:.2g})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _breakdown(summary: dict) -> list[str]:
    names = summary["policies"]
    components = sorted({k for n in names for k in summary["metrics"][n][ALL]["components"]})
    lines = ["| policy | total | " + " | ".join(components) + " |", "|" + "---|" * (len(components) + 2)]
    for name in names:
        m = summary["metrics"][name][ALL]
        lines.append(f"| **{name}** | {m['mean_reward']:.3f} | "
                     + " | ".join(f"{m['components'].get(k, 0.0):.3f}" for k in components) + " |")
    return lines


def _paired_table(summary: dict) -> list[str]:
    lines = ["| later | earlier | env | earlier solved | later solved | wins | losses | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    for pair in summary["pairs"]:
        for env in summary["envs"] + ([ALL] if len(summary["envs"]) > 1 else []):
            t = pair[env]
            lines.append(f"| {pair['after']} | {pair['before']} | {env} | {t['before']}/{t['tasks']} | "
                         f"{t['after']}/{t['tasks']} | {t['gained']} | {t['lost']} | {t['p_value']:.2g} |")
    return lines
