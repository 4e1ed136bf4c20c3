"""Reward configuration: the weight of each scorer in the total and the scorers' own values."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from jobs.config_loader import doc
from rewards.length_penalty import FREE_TURNS, PER_TOKEN, PER_TURN
from rewards.safety import AFTER_ERRORS, GAVE_UP
from rewards.tool_shaping import CORRECT, FAILED, NONE, WRONG

__all__ = ["RewardConfig", "DEFAULT_WEIGHTS"]

# Outcome is the task; format and tool use are shaping, kept smaller by construction (validate, rewards.tool_shaping).
DEFAULT_WEIGHTS = {"outcome": 1.0, "format": 0.1, "tool_use": 1.0, "efficiency": 0.0}


@dataclass(frozen=True)
class RewardConfig:
    weights: dict[str, float] = doc(DEFAULT_WEIGHTS, "weight of each scorer (rewards.SCORERS) in the total; "
                                    "scorers not listed keep these defaults, 0 turns one off")
    tool_none: float = doc(NONE, "tool_use value of an episode with no tool call; 0 = neutral")
    tool_failed: float = doc(FAILED, "tool_use value when the last call failed (ok False); below none so broken "
                             "calls never pay")
    tool_wrong: float = doc(WRONG, "tool_use value when the last call ran but its result is not the answer; small: "
                            "running the tool is the first skill to learn")
    tool_correct: float = doc(CORRECT, "tool_use value when the last call's result is the answer; a right answer "
                              "with it beats a lucky guess without it")
    efficiency_per_turn: float = doc(PER_TURN, "efficiency penalty per turn beyond the free ones")
    efficiency_free_turns: int = doc(FREE_TURNS, "turns that cost nothing; 2 = one tool call + one answer")
    efficiency_per_token: float = doc(PER_TOKEN, "efficiency penalty per sampled token; 0 = length is free")

    def __post_init__(self) -> None:
        # A partial override (`reward.weights.format=0.2`) replaces the whole mapping: keep the other defaults.
        object.__setattr__(self, "weights", {**DEFAULT_WEIGHTS, **dict(self.weights)})

    def params(self, name: str) -> dict:
        """Keyword arguments ``combine`` passes to scorer ``name`` (its configurable values)."""
        if name == "tool_use":
            return {"none": self.tool_none, "failed": self.tool_failed, "wrong": self.tool_wrong,
                    "correct": self.tool_correct}
        if name == "efficiency":
            return {"per_turn": self.efficiency_per_turn, "free_turns": self.efficiency_free_turns,
                    "per_token": self.efficiency_per_token}
        return {}

    def validate(self) -> list[str]:
        from rewards.scorers import SCORERS

        problems = []
        for name, weight in self.weights.items():
            if name not in SCORERS:
                close = difflib.get_close_matches(str(name), list(SCORERS), n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                problems.append(f"weights.{name}: unknown scorer. {hint}Fix: use one of {', '.join(SCORERS)} "
                                "(or add the scorer to rewards.SCORERS)")
            elif not _finite(weight):
                problems.append(f"weights.{name}: must be a finite number, got {weight!r}. Fix: e.g. "
                                f"{DEFAULT_WEIGHTS.get(name, 0.0)}")
            elif name == "outcome" and weight <= 0:
                problems.append(f"weights.outcome: must be > 0, got {weight}. Fix: keep it at 1.0; without it the "
                                "policy learns the shaping, not the task")
            elif weight < 0:
                problems.append(f"weights.{name}: must be >= 0, got {weight}. Fix: use 0 to turn {name} off (a "
                                "negative weight rewards the opposite of what it measures)")
        values = {"tool_none": self.tool_none, "tool_failed": self.tool_failed, "tool_wrong": self.tool_wrong,
                  "tool_correct": self.tool_correct, "efficiency_per_turn": self.efficiency_per_turn,
                  "efficiency_per_token": self.efficiency_per_token}
        bad = [k for k, v in values.items() if not _finite(v)]
        problems += [f"{k}: must be a finite number, got {values[k]!r}. Fix: use the default" for k in bad]
        if bad or problems:
            return problems
        if not self.tool_failed < self.tool_wrong < self.tool_correct:
            problems.append(f"tool_failed < tool_wrong < tool_correct must hold, got {self.tool_failed}, "
                            f"{self.tool_wrong}, {self.tool_correct}. Fix: order them, e.g. -0.2, 0.1, 0.3")
        for name in ("efficiency_per_turn", "efficiency_per_token", "efficiency_free_turns"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be >= 0, got {getattr(self, name)}. Fix: use 0 for no penalty")
        span = self.shaping_span()
        outcome = self.weights["outcome"]
        if span >= outcome:
            problems.append(f"weights: format and tool_use can move the total by {span:g}, not less than the outcome "
                            f"weight {outcome:g}, so shaping could outweigh a right answer. Fix: lower "
                            "weights.tool_use / weights.format or the tool_* values (defaults give 0.6 < 1.0)")
        return problems

    def shaping_span(self) -> float:
        """The most format and tool_use together can move the total (format is in [0, 1]); efficiency is left out:
        it is unbounded per token and off by default."""
        tool_values = (self.tool_none, self.tool_failed, self.tool_wrong, self.tool_correct)
        return (self.weights.get("tool_use", 0.0) * (max(tool_values) - min(tool_values))
                + self.weights.get("format", 0.0) * 1.0
                + self.weights.get("escalation", 0.0) * (AFTER_ERRORS - GAVE_UP))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
