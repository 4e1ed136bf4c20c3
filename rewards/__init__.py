"""Rewards: pure scorers ``score(trajectory, task) -> float``, their weighted combination, per-turn process scorers
``score(trajectory, task) -> list[float]``, the reward-hacking monitor, and the reward actor.

Modules are named for their concept, not their function (``tool_shaping`` holds ``tool_use``), so importing a
submodule is never shadowed by the function re-exported here.
"""

from __future__ import annotations

from rewards.config import DEFAULT_WEIGHTS, RewardConfig
from rewards.format_grade import format_validity
from rewards.length_penalty import efficiency
from rewards.monitor import hacking_flag, hacking_report, hacking_warning, reward_stats, trend
from rewards.process import PROCESS_SCORERS, ProcessScorer, process_rewards, tool_call_validity, tool_progress
from rewards.reward_actor import RewardActor
from rewards.scorers import SCORERS, Scorer, combine
from rewards.tool_shaping import classify_calls, tool_results, tool_use
from rewards.verifiers import VERIFIERS, Verifier, outcome, verifier_for

__all__ = [
    "RewardConfig",
    "DEFAULT_WEIGHTS",
    "SCORERS",
    "Scorer",
    "combine",
    "outcome",
    "format_validity",
    "tool_use",
    "efficiency",
    "VERIFIERS",
    "Verifier",
    "verifier_for",
    "classify_calls",
    "tool_results",
    "RewardActor",
    "reward_stats",
    "hacking_flag",
    "hacking_report",
    "hacking_warning",
    "trend",
    "PROCESS_SCORERS",
    "ProcessScorer",
    "process_rewards",
    "tool_call_validity",
    "tool_progress",
]
