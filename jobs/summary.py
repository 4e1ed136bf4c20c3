"""A short, readable summary of a trajectory batch (rollout, training steps and eval all print one)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from actors.evaluation import succeeded
from actors.trajectory import Trajectory


def summarize(trajectories: Sequence[Trajectory], wall_s: float) -> dict:
    n = len(trajectories)
    calls = [c for t in trajectories for c in t.tool_calls]
    sampled = sum(t.num_sampled for t in trajectories)
    return {
        "episodes": n,
        "success_rate": _mean([succeeded(t) for t in trajectories]),
        "mean_reward": _mean([t.reward for t in trajectories]),
        "episodes_with_tool_call": _mean([any(c.name for c in t.tool_calls) for t in trajectories]),
        "tool_calls": len(calls),
        "tool_call_success_rate": _mean([c.ok for c in calls]),
        "strict_tool_call_rate": _mean([c.ok and c.strict for c in calls]),
        "parse_errors": sum(t.parse_errors for t in trajectories),
        "mean_turns": _mean([len(t.turns) for t in trajectories]),
        "status": dict(Counter(t.status for t in trajectories)),
        "sampled_tokens": sampled,
        "tokens_per_s": sampled / wall_s if wall_s > 0 else 0.0,
        "wall_s": wall_s,
    }


def format_summary(s: dict) -> str:
    rows = [
        ("episodes", f"{s['episodes']}"),
        ("success rate", f"{s['success_rate']:.1%}"),
        ("mean reward", f"{s['mean_reward']:.3f}"),
        ("episodes calling a tool", f"{s['episodes_with_tool_call']:.1%}"),
        ("tool calls (ok / strict)", f"{s['tool_calls']} ({s['tool_call_success_rate']:.1%} / "
                                     f"{s['strict_tool_call_rate']:.1%})"),
        ("parse errors", f"{s['parse_errors']}"),
        ("mean turns", f"{s['mean_turns']:.2f}"),
        ("status", ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items()))),
        ("sampled tokens/s", f"{s['tokens_per_s']:.1f} ({s['sampled_tokens']} in {s['wall_s']:.1f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _mean(xs: Sequence) -> float:
    return float(sum(xs)) / len(xs) if xs else 0.0
