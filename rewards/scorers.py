"""The scorers and how they combine into one episode reward.

Every scorer is a pure function ``score(trajectory, task) -> float`` (configurable values are keyword-only
arguments with defaults, filled from ``RewardConfig.params``). ``SCORERS`` is the one dict naming them; a new
scorer is a function with a doctest plus an entry here and a weight in the config.

A scorer that raises never fails the batch: ``combine`` records ``"<name>_error": 1.0`` in the breakdown and
counts the component as 0, so one odd trajectory (or a scorer bug) shows up in the logged stats instead of killing
a training step. The scorers themselves return a value on the odd cases they know about (no final answer,
truncated or error status, no tool calls) without raising.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.config import RewardConfig
from rewards.format_grade import format_validity
from rewards.grounding import grounded
from rewards.judge import judge_scorer
from rewards.length_penalty import efficiency
from rewards.retry import retry_quality
from rewards.reward_model_scorer import reward_model
from rewards.safety import escalation, safety
from rewards.tool_shaping import tool_use
from rewards.verifiers import outcome

__all__ = ["SCORERS", "Scorer", "combine"]

Scorer = Callable[..., float]  # score(trajectory, task, **params) -> float

SCORERS: dict[str, Scorer] = {
    "outcome": outcome,
    "format": format_validity,
    "tool_use": tool_use,
    "efficiency": efficiency,
    "grounded": grounded,  # search: the gold document was retrieved (reward.weights.grounded=0.2 turns it on)
    "safety": safety,  # support_desk: unsafe refund attempts cost -1 (reward.weights.safety=1.0)
    "escalation": escalation,  # support_desk: escalate after repeated errors (reward.weights.escalation=0.5)
    "retry": retry_quality,  # weather: retries transient failures, not permanent ones (reward.weights.retry=0.15)
    "reward_model": reward_model,  # a Bradley–Terry model (reward.reward_model_path; jobs/train_reward_model.py)
    "judge": judge_scorer,  # an LLM judge's rubric score in [0, 1], asked per batch by the reward actor (reward.judge)
}


def combine(trajectory: Trajectory, task: Task, cfg: RewardConfig,
            given: Mapping[str, float] | None = None) -> tuple[float, dict[str, float]]:
    """The weighted total and the breakdown: each scorer's *unweighted* value, ``"total"``, and an
    ``"<name>_error": 1.0`` entry for each scorer that raised (its value counts as 0). Scorers with weight 0 still
    run, so their values are logged. ``given``: values the caller computed for whole batches (the judge's, from
    the reward actor), used instead of calling those scorers.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> traj = example_trajectory(calls=[tool_call("391")], final_answer="17 * 23 = 391.")
    >>> total, parts = combine(traj, example_task(answer=391), RewardConfig())
    >>> round(total, 6), {name: round(value, 6) for name, value in parts.items()}
    (1.4, {'outcome': 1.0, 'format': 1.0, 'tool_use': 0.3, 'efficiency': 0.0, 'total': 1.4})
    """
    breakdown: dict[str, float] = {}
    errors: dict[str, float] = {}
    total = 0.0
    for name, weight in cfg.weights.items():
        try:
            value = float(given[name]) if given and name in given else \
                float(SCORERS[name](trajectory, task, **cfg.params(name)))
        except Exception:  # contained by design (module doc): a scorer bug costs a component, not the step
            value, errors[f"{name}_error"] = 0.0, 1.0
        breakdown[name] = value
        total += weight * value
    breakdown["total"] = total
    breakdown.update(errors)
    return total, breakdown
