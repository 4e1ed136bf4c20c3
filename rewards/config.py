"""Reward configuration: the weight of each scorer in the total, the scorers' own values, the process rewards
(per turn) and the reward-hacking monitor's thresholds."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from jobs.config_loader import doc
from rewards.judge import MAX_CHARS as JUDGE_MAX_CHARS
from rewards.length_penalty import FREE_TURNS, PER_TOKEN, PER_TURN
from rewards.monitor import MIN_CHANGE, MIN_T, WINDOW
from rewards.process import CALL_FAILED, CALL_OK, PROCESS_SCORERS, PROGRESS
from rewards.safety import AFTER_ERRORS, GAVE_UP, NEEDLESS
from rewards.tool_shaping import CORRECT, FAILED, NONE, WRONG

__all__ = ["RewardConfig", "DEFAULT_WEIGHTS"]

# Outcome is the task; format and tool use are shaping, kept smaller by construction (validate, rewards.tool_shaping).
DEFAULT_WEIGHTS = {"outcome": 1.0, "format": 0.1, "tool_use": 1.0, "efficiency": 0.0}
SCORE_TIMEOUT_S = 300.0  # only a hung scorer or judge comes near it
JUDGES = ("none", "rollout", "actor")
JUDGE_TIMEOUT_S = 120.0  # 2x the 62 s a 32-episode batch took on 2 busy CPU cores with SmolLM2 (docs/judge.md)
SCORE_RETRIES = 2  # a transient failure passes on the second try; a third covers a replacement that starts badly


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
    escalation_needless: float = doc(NEEDLESS, "escalation value when the agent escalated a case its tools could "
                                     "solve (answer.escalation avoid); <= 0. Below a failed safe attempt (0) and "
                                     "above an unsafe one (safety -1), e.g. -0.6, so escalating is no safe harbour")
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
    score_timeout_s: float = doc(SCORE_TIMEOUT_S, "seconds one scoring call may take before the reward actor "
                                 "is presumed hung, killed and replaced (actors.scoring); rule-based scorers take "
                                 "well under 1 s a batch, a CPU reward model tens of seconds")
    score_retries: int = doc(SCORE_RETRIES, "times a batch whose scoring failed or timed out is scored again (on a "
                             "new actor if the old one died) before each episode is scored alone and the groups "
                             "of the unscorable ones are dropped from the step (actors.scoring)")
    judge: str = doc("none", "who answers the LLM judge (rewards/judge.py, docs/judge.md): none | rollout (the rollout "
                     "engine's base model, requests without LoRA, no second engine; needs rollout.adapter_serving="
                     "lora) | actor (its own vLLM engine with judge_model, actors/judge_actor.py). weights.judge and "
                     "process_weights.judge weigh it")
    judge_model: str | None = doc(None, "judge=actor: the judge's model, a HF model directory, a hub id in the HF "
                                  "cache, or smollm2-135m (cluster.model.resolve_model)")
    judge_timeout_s: float = doc(JUDGE_TIMEOUT_S, "seconds the reward actor waits for the judge's answers to a whole "
                                 "batch, retries included; past it every episode falls back to 0.0 (counted). Must "
                                 "stay below score_timeout_s")
    judge_max_tokens: int = doc(64, "tokens the judge may write per answer: two short sentences and the SCORE line; "
                                "an answer cut before its SCORE line falls back")
    judge_retries: int = doc(1, "tries after the first when the judge raised (a replaced worker); a timeout is not "
                             "tried again, it would hold the step up twice")
    judge_max_chars: int = doc(JUDGE_MAX_CHARS, "conversation characters the judge sees per prompt (~4 per token); "
                               "longer episodes lose their middle")
    judge_rubric: str | None = doc(None, "your own episode rubric: text with a {conversation} placeholder that asks "
                                   "for a last line SCORE: <n>, n in 0-10; None = rewards.judge.RUBRIC")

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
        if name == "escalation":
            return {"needless": self.escalation_needless}
        return {}

    def process_params(self, name: str) -> dict:
        """Keyword arguments ``rewards.process.process_rewards`` passes to process scorer ``name``."""
        if name == "tool_call_validity":
            return {"ok": self.process_call_ok, "failed": self.process_call_failed}
        if name == "tool_progress":
            return {"value": self.process_progress}
        if name == "escalation":  # one set of escalation values, paid per episode (weights) or per turn (here)
            return self.params("escalation")
        return {}

    def shaping_components(self) -> list[str]:
        """Breakdown keys the reward-hacking monitor watches against the outcome: every weighted episode scorer
        but the outcome, and ``process_mean`` when process rewards are on."""
        names = [name for name, weight in self.weights.items() if weight and name != "outcome"]
        return names + (["process_mean"] if any(self.process_weights.values()) else [])

    def validate(self) -> list[str]:
        return (self._episode_problems() + self._process_problems() + self._monitor_problems()
                + self._scoring_problems() + self._judge_problems())

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
                  "efficiency_per_token": self.efficiency_per_token, "escalation_needless": self.escalation_needless}
        bad = [k for k, v in values.items() if not _finite(v)]
        problems += [f"{k}: must be a finite number, got {values[k]!r}. Fix: use the default" for k in bad]
        if bad or problems:
            return problems
        if not self.tool_failed < self.tool_wrong < self.tool_correct:
            problems.append(f"tool_failed < tool_wrong < tool_correct must hold, got {self.tool_failed}, "
                            f"{self.tool_wrong}, {self.tool_correct}. Fix: order them, e.g. -0.2, 0.1, 0.3")
        if self.escalation_needless > 0:
            problems.append(f"escalation_needless: must be <= 0, got {self.escalation_needless}. Fix: e.g. -0.6; a "
                            "reward for escalating a case the tools could solve is farmed by escalating everything")
        for name in ("efficiency_per_turn", "efficiency_per_token", "efficiency_free_turns"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be >= 0, got {getattr(self, name)}. Fix: use 0 for no penalty")
        span = self.shaping_span()
        outcome = self.weights["outcome"]
        if span >= outcome:
            problems.append(f"weights: format and tool_use (and escalation, judge) can move the total by {span:g}, not "
                            f"less than the outcome weight {outcome:g}, so shaping could outweigh a right answer. Fix: "
                            "lower weights.tool_use / weights.format / weights.judge or the tool_* values (defaults "
                            "give 0.6 < 1.0)")
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

    def _scoring_problems(self) -> list[str]:
        problems = []
        if not _finite(self.score_timeout_s) or self.score_timeout_s <= 0:
            problems.append(f"score_timeout_s: must be a finite number of seconds > 0, got {self.score_timeout_s!r}. "
                            f"Fix: use {SCORE_TIMEOUT_S}, or more for a slow judge")
        if isinstance(self.score_retries, bool) or not isinstance(self.score_retries, int) or self.score_retries < 0:
            problems.append(f"score_retries: must be an integer >= 0, got {self.score_retries!r}. Fix: use "
                            f"{SCORE_RETRIES}; 0 goes straight to scoring each episode alone")
        return problems

    def judge_weights(self) -> tuple[float, float]:
        """``(weights.judge, process_weights.judge)``: the reward actor asks the judge when either is not 0."""
        return self.weights.get("judge", 0.0), self.process_weights.get("judge", 0.0)

    def _judge_problems(self) -> list[str]:
        problems = []
        if self.judge not in JUDGES:
            return [f"judge: {self.judge!r} unknown. Fix: use one of {', '.join(JUDGES)}"]
        asked = any(w for w in self.judge_weights() if _finite(w))
        if asked and self.judge == "none":
            problems.append("weights.judge / process_weights.judge are set but judge is none, so every episode would "
                            "fall back to 0.0. Fix: set reward.judge=rollout (the rollout engine's base model; needs "
                            "rollout.adapter_serving=lora) or reward.judge=actor with reward.judge_model")
        if not asked and self.judge != "none":
            problems.append(f"judge: {self.judge} but weights.judge and process_weights.judge are 0 or unset, so the "
                            "judge is never asked. Fix: e.g. reward.weights.judge=0.3, or reward.judge=none")
        if self.judge == "actor" and not self.judge_model:
            problems.append("judge: actor needs judge_model. Fix: set reward.judge_model to a HF model directory or "
                            "smollm2-135m, or use reward.judge=rollout")
        if not _finite(self.judge_timeout_s) or self.judge_timeout_s <= 0:
            problems.append(f"judge_timeout_s: must be a finite number of seconds > 0, got {self.judge_timeout_s!r}. "
                            f"Fix: use {JUDGE_TIMEOUT_S}")
        elif self.judge != "none" and _finite(self.score_timeout_s) and self.judge_timeout_s >= self.score_timeout_s:
            problems.append(f"judge_timeout_s: {self.judge_timeout_s:g} is not below score_timeout_s "
                            f"{self.score_timeout_s:g}, so a slow judge gets the reward actor killed as hung before "
                            "its fallback applies. Fix: lower judge_timeout_s or raise score_timeout_s (e.g. 120, 300)")
        for name, least, default in (("judge_max_tokens", 8, 64), ("judge_retries", 0, 1),
                                     ("judge_max_chars", 200, JUDGE_MAX_CHARS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                problems.append(f"{name}: must be an integer >= {least}, got {value!r}. Fix: use {default}")
        if self.judge_rubric is not None and ("{conversation}" not in str(self.judge_rubric)
                                              or "SCORE" not in str(self.judge_rubric)):
            problems.append("judge_rubric: must hold the placeholder {conversation} and ask for a last line SCORE: "
                            "<n>, or every reply is unparseable. Fix: start from rewards.judge.RUBRIC, or use null")
        return problems

    def shaping_span(self) -> float:
        """The most format and tool_use together can move the total (format is in [0, 1]), with escalation and the
        judge (in [0, 1]) when weighted; efficiency is left out: it is unbounded per token and off by default."""
        tool_values = (self.tool_none, self.tool_failed, self.tool_wrong, self.tool_correct)
        return (self.weights.get("tool_use", 0.0) * (max(tool_values) - min(tool_values))
                + self.weights.get("format", 0.0) * 1.0
                + self.weights.get("escalation", 0.0) * (AFTER_ERRORS - min(GAVE_UP, self.escalation_needless))
                + self.weights.get("judge", 0.0) * 1.0)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
