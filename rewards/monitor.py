"""Reward monitoring: per-component batch statistics and a simple reward-hacking alarm over training steps."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from actors.trajectory import Trajectory

__all__ = ["reward_stats", "hacking_flag"]


def reward_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """``"<component>/mean|std|min|max"`` for every key of the breakdowns (``total`` included), plus ``"count"``.

    A key missing from some breakdowns counts as 0 there: that is what a missing ``"<name>_error"`` means, so the
    error entries' means are error rates. ``std`` is the population standard deviation.

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
    for key in keys:
        values = [float(t.reward_breakdown.get(key, 0.0)) for t in trajectories]
        out[f"{key}/mean"] = statistics.fmean(values)
        out[f"{key}/std"] = statistics.pstdev(values)
        out[f"{key}/min"] = min(values)
        out[f"{key}/max"] = max(values)
    return out


def hacking_flag(history: Sequence[dict], *, window: int = 6, min_change: float = 0.05,
                 shaping: Sequence[str] = ("format", "tool_use")) -> bool:
    """True when, over the last ``window`` steps, a shaping component's mean rose while the outcome's mean fell.

    ``history`` is one ``reward_stats`` dict per training step, oldest first. The window is split in halves and
    the halves' averages compared: "rose" / "fell" means a change of at least ``min_change`` (absolute). Averaging
    halves instead of comparing two steps keeps one noisy batch from raising the alarm. False while fewer than
    ``window`` steps carry ``outcome/mean``. It is an alarm to look at samples, not proof of hacking.

    >>> outcome, fmt = [0.5, 0.5, 0.5, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.9, 0.9, 0.9]
    >>> steps = [{"outcome/mean": o, "format/mean": f} for o, f in zip(outcome, fmt)]
    >>> hacking_flag(steps), hacking_flag([{**s, "outcome/mean": 0.5} for s in steps])
    (True, False)
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 steps, got {window}")
    recent = [h for h in history if _number(h.get("outcome/mean"))][-window:]
    if len(recent) < window:
        return False
    half = window // 2
    early, late = recent[:half], recent[-half:]

    def change(key: str) -> float | None:
        a, b = [h.get(key) for h in early], [h.get(key) for h in late]
        if not all(_number(v) for v in a + b):
            return None
        return statistics.fmean(b) - statistics.fmean(a)

    fell = change("outcome/mean")
    if fell is None or fell > -min_change:
        return False
    return any((rise := change(f"{name}/mean")) is not None and rise >= min_change for name in shaping)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
