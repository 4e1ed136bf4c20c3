"""Reward configuration: the weight of each scorer in the total, the scorers' own values, the process rewards
(per turn) and the reward-hacking monitor's thresholds."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from jobs.config_loader import doc
from rewards.length_penalty import FREE_TURNS, PER_TOKEN, PER_TURN
from rewards.monitor import MIN_CHANGE, MIN_T, WINDOW
from rewards.process import CALL_FAILED, CALL_OK, PROCESS_SCORERS, PROGRESS
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
    process_weights: dict[str, float] = doc({}, "weight of each process scorer (rewards.PROCESS_SCORERS) in the "
                                            "per-turn reward Turn.reward; empty = off (Turn.reward left as "
                                            "given); a scorer listed with weight 0 is computed and logged only")
    process_call_ok: float = doc(CALL_OK, "tool_call_validity value of a turn whose calls all parsed and ran; "
                                 "= tool_wrong: running the tool is the first skill")
    process_call_failed: float = doc(CALL_FAILED, "tool_call_validity value of a turn with a failed or unreadable "
                                     "call; < 0 so broken calls never pay (= tool_failed)")
    process_progress: float = doc(PROGRESS, "tool_progress value of the turn whose call first produced the answer; "
                                  "paid once per episode (= tool_correct - tool_wrong)")
    reward_model_path: str | None = doc(None, "the model/ directory of python -m jobs.train_reward_model, read by "
                                        "the reward_model scorer (reward.weights.reward_model=0.5 turns it on)")
    monitor_window: int = doc(WINDOW, "reward-hacking monitor: training steps in the trend window (rewards.monitor)")
    monitor_min_change: float = doc(MIN_CHANGE, "reward-hacking monitor: a trend counts when its fitted line moves "
                                    "at least this much (reward units) over the window")
    monitor_min_t: float = doc(MIN_T, "reward-hacking monitor: and when |slope| / its standard error is at least "
                               "this, so noise alone does not raise the alarm")

    def __post_init__(self) -> None:
        # A partial override (`reward.weights.format=0.2`) replaces the whole mapping: keep the other defaults.
        object.__setattr__(self, "weights", {**DEFAULT_WEIGHTS, **dict(self.weights)})
        object.__setattr__(self, "process_weights", dict(self.process_weights))

    def params(self, name: str) -> dict:
        """Keyword arguments ``combine`` passes to scorer ``name`` (its configurable values)."""
        if name == "tool_use":
            return {"none": self.tool_none, "failed": self.tool_failed, "wrong": self.tool_wrong,
                    "correct": self.tool_correct}
        if name == "efficiency":
            return {"per_turn": self.efficiency_per_turn, "free_turns": self.efficiency_free_turns,
                    "per_token": self.efficiency_per_token}
        if name == "reward_model":
            return {"path": self.reward_model_path}
        return {}

    def process_params(self, name: str) -> dict:
        """Keyword arguments ``rewards.process.process_rewards`` passes to process scorer ``name``."""
        if name == "tool_call_validity":
            return {"ok": self.process_call_ok, "failed": self.process_call_failed}
        if name == "tool_progress":
            return {"value": self.process_progress}
        return {}

    def shaping_components(self) -> list[str]:
        """Breakdown keys the reward-hacking monitor watches against the outcome: every weighted episode scorer
        but the outcome, and ``process_mean`` when process rewards are on."""
        names = [name for name, weight in self.weights.items() if weight and name != "outcome"]
        return names + (["process_mean"] if any(self.process_weights.values()) else [])

    def validate(self) -> list[str]:
        return self._episode_problems() + self._process_problems() + self._monitor_problems()

    def _episode_problems(self) -> list[str]:
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
        problems += self._reward_model_problems()
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

    def _reward_model_problems(self) -> list[str]:
        if "reward_model" not in self.weights:
            return []
        fix = "Fix: set reward.reward_model_path to the model/ directory written by python -m jobs.train_reward_model"
        if not self.reward_model_path:
            return [f"weights.reward_model is set but reward_model_path is empty. {fix}"]
        from pathlib import Path

        from learners.reward_model import HEAD_FILE
        if not (Path(self.reward_model_path) / HEAD_FILE).is_file():
            return [f"reward_model_path: {self.reward_model_path} has no {HEAD_FILE}, so it is not a reward model "
                    f"directory. {fix}"]
        return []

    def _process_problems(self) -> list[str]:
        problems = []
        for name, weight in self.process_weights.items():
            if name not in PROCESS_SCORERS:
                close = difflib.get_close_matches(str(name), list(PROCESS_SCORERS), n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                problems.append(f"process_weights.{name}: unknown process scorer. {hint}Fix: use one of "
                                f"{', '.join(PROCESS_SCORERS)} (or add it to rewards.PROCESS_SCORERS)")
            elif not _finite(weight) or weight < 0:
                problems.append(f"process_weights.{name}: must be a finite number >= 0, got {weight!r}. Fix: use "
                                "0 (or leave it out) to turn it off, e.g. 1.0 to turn it on")
        values = {"process_call_ok": self.process_call_ok, "process_call_failed": self.process_call_failed,
                  "process_progress": self.process_progress}
        for name, value in values.items():
            if not _finite(value):
                problems.append(f"{name}: must be a finite number, got {value!r}. Fix: use the default")
        if _finite(self.process_call_failed) and self.process_call_failed >= 0:
            problems.append(f"process_call_failed: must be < 0, got {self.process_call_failed}. Fix: e.g. "
                            f"{CALL_FAILED}; a failed call that costs nothing teaches the policy to spam calls")
        for name in ("process_call_ok", "process_progress"):
            if _finite(values[name]) and values[name] < 0:
                problems.append(f"{name}: must be >= 0, got {values[name]}. Fix: use 0 for no reward")
        return problems

    def _monitor_problems(self) -> list[str]:
        problems = []
        if isinstance(self.monitor_window, bool) or not isinstance(self.monitor_window, int) \
                or self.monitor_window < 3:
            problems.append(f"monitor_window: must be an integer >= 3 steps (a trend and its noise need 3 points), "
                            f"got {self.monitor_window!r}. Fix: use {WINDOW}")
        for name in ("monitor_min_change", "monitor_min_t"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                problems.append(f"{name}: must be a finite number >= 0, got {value!r}. Fix: use the default "
                                f"{MIN_CHANGE if name == 'monitor_min_change' else MIN_T}")
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
