"""Reward monitoring: per-component batch statistics and a reward-hacking alarm over training steps.

The alarm (``hacking_report``): over the last ``window`` steps, fit a least-squares line to the batch mean of the
outcome and of each shaping component (format, tool use, process rewards, ...). Reward hacking looks like a shaping
line going up while the outcome line goes down: the policy found a way to earn the shaping that is not the task.
A trend counts when the fitted line moves by at least ``min_change`` over the window *and* its slope is at least
``min_t`` standard errors from 0 (the standard error from the residuals of the fit), so one noisy batch or a noisy
flat run does not raise the alarm, while a clean step change or a steady drift does. Both rising is learning; both
falling is a collapse (bad, but not hacking; other metrics show it). It is an alarm to look at samples, not proof.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from actors.trajectory import Trajectory

__all__ = ["reward_stats", "hacking_flag", "hacking_report", "hacking_warning", "trend", "WINDOW", "MIN_CHANGE",
           "MIN_T"]

WINDOW, MIN_CHANGE, MIN_T = 6, 0.05, 2.0  # steps; reward units over the window; standard errors (df = window - 2)


def reward_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """``"<component>/mean|std|min|max"`` for every key of the breakdowns (``total`` included), plus ``"count"``.

    A key missing from some breakdowns counts as 0 there: that is what a missing ``"<name>_error"`` means, so the
    error entries' means are error rates. ``std`` is the population standard deviation. When the batch carries
    process rewards (a ``process_mean`` breakdown key, set by the reward actor), ``"turn_reward/mean|std|min|max"``
    are the same statistics over all turns of the batch (``Turn.reward``).

    >>> from rewards._examples import example_trajectory
    >>> a, b = example_trajectory(final_answer="1"), example_trajectory(final_answer="2")
    >>> a.reward_breakdown, b.reward_breakdown = {"outcome": 1.0}, {"outcome": 0.0, "outcome_error": 1.0}
    >>> stats = reward_stats([a, b])
    >>> stats["count"], stats["outcome/mean"], stats["outcome/std"], stats["outcome/max"], stats["outcome_error/mean"]
    (2, 0.5, 0.5, 1.0, 0.5)
    """
    out: dict[str, float] = {"count": len(trajectories)}
    keys: list[str] = []
    for t in trajectories:
        keys += [k for k in t.reward_breakdown if k not in keys]
    columns = {key: [float(t.reward_breakdown.get(key, 0.0)) for t in trajectories] for key in keys}
    if "process_mean" in keys:
        columns["turn_reward"] = [float(turn.reward) for t in trajectories for turn in t.turns]
    for key, values in columns.items():
        if values:
            out[f"{key}/mean"] = statistics.fmean(values)
            out[f"{key}/std"] = statistics.pstdev(values)
            out[f"{key}/min"] = min(values)
            out[f"{key}/max"] = max(values)
    return out


def trend(values: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ``values`` against the step index (0, 1, ...) and its t statistic, slope / standard
    error, with the error from the residual variance on ``n - 2`` degrees of freedom. A perfect line has t = +-inf
    (0 when flat); fewer than 3 points have no error estimate: ValueError.

    >>> [round(v, 4) for v in trend([0.5, 0.5, 0.5, 0.3, 0.3, 0.3])]  # slope -0.2 * 4.5 / 17.5, se 0.0586 / 4.18
    [-0.0514, -3.6742]
    >>> trend([1.0, 2.0, 3.0]), trend([2.0, 2.0, 2.0])
    ((1.0, inf), (0.0, 0.0))
    """
    n = len(values)
    if n < 3:
        raise ValueError(f"a trend with its noise needs >= 3 points, got {n}")
    x_mean, y_mean = (n - 1) / 2, statistics.fmean(values)
    sxx = sum((x - x_mean) ** 2 for x in range(n))
    slope = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(values)) / sxx
    residual = sum((y - y_mean - slope * (x - x_mean)) ** 2 for x, y in enumerate(values))
    stderr = math.sqrt(residual / (n - 2) / sxx)
    if stderr <= 1e-12 * max(1.0, abs(slope)):  # an exact line (up to round-off): no noise to weigh it against
        return slope, math.copysign(math.inf, slope) if slope else 0.0
    return slope, slope / stderr


def hacking_report(history: Sequence[dict], *, window: int = WINDOW, min_change: float = MIN_CHANGE,
                   min_t: float = MIN_T, shaping: Sequence[str] = ("format", "tool_use")) -> dict:
    """The alarm of the module doc, with its evidence.

    ``history`` is one ``reward_stats`` dict per training step, oldest first (``"<component>/mean"`` keys); the
    last ``window`` steps that carry ``outcome/mean`` are used. A component missing (or not finite) at any of those
    steps is skipped. Returns ``{"flag": bool, "outcome_change": float | None, "rising": {name: change},
    "window": int}``, where a change is the fitted line's rise over the window (slope x (window - 1)) and
    ``rising`` lists the shaping components that rose significantly. The flag is False (and ``outcome_change``
    None) while fewer than ``window`` steps are there.

    >>> outcome, fmt = [0.5, 0.5, 0.5, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.9, 0.9, 0.9]
    >>> report = hacking_report([{"outcome/mean": o, "format/mean": f} for o, f in zip(outcome, fmt)])
    >>> report["flag"], round(report["outcome_change"], 4), {k: round(v, 4) for k, v in report["rising"].items()}
    (True, -0.2571, {'format': 0.9})
    """
    if window < 3:
        raise ValueError(f"window must be >= 3 steps (a trend and its noise), got {window}")
    recent = [h for h in history if _number(h.get("outcome/mean"))][-window:]
    report: dict = {"flag": False, "outcome_change": None, "rising": {}, "window": window}
    if len(recent) < window:
        return report

    def significant(name: str, sign: float) -> float | None:
        values = [h.get(f"{name}/mean") for h in recent]
        if not all(_number(v) for v in values):
            return None
        slope, t = trend(values)
        change = slope * (window - 1)
        return change if sign * change >= min_change and sign * t >= min_t else None

    outcome_slope, _ = trend([h["outcome/mean"] for h in recent])
    report["outcome_change"] = outcome_slope * (window - 1)
    report["rising"] = {name: change for name in shaping if (change := significant(name, +1.0)) is not None}
    report["flag"] = significant("outcome", -1.0) is not None and bool(report["rising"])
    return report


def hacking_flag(history: Sequence[dict], **kwargs) -> bool:
    """``hacking_report(history, **kwargs)["flag"]``: a shaping component rising while the outcome falls.

    >>> outcome, fmt = [0.5, 0.5, 0.5, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.9, 0.9, 0.9]
    >>> steps = [{"outcome/mean": o, "format/mean": f} for o, f in zip(outcome, fmt)]
    >>> hacking_flag(steps), hacking_flag([{**s, "outcome/mean": 0.5} for s in steps])
    (True, False)
    """
    return bool(hacking_report(history, **kwargs)["flag"])


def hacking_warning(report: dict) -> str:
    """The training-log line for a raised flag (empty when it is not raised)."""
    if not report["flag"]:
        return ""
    rising = ", ".join(f"{name} {change:+.3f}" for name, change in report["rising"].items())
    return (f"WARNING reward hacking? over the last {report['window']} steps the outcome fell "
            f"({report['outcome_change']:+.3f}) while shaping rose ({rising}): read this step's trajectories "
            "before trusting the reward curve")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
