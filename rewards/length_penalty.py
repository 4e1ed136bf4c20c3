"""Efficiency shaping: a small penalty for turns beyond the free ones and for every sampled token.

Off by default (weight 0 in ``RewardConfig``): length penalties fight exploration early in training. The first
``free_turns`` turns cost nothing, 2 by default because the intended calculator episode is one call plus one
answer: charging the second turn would tax exactly the tool use ``tool_use`` shapes for. The value is <= 0.
"""

from __future__ import annotations

from actors.trajectory import Trajectory
from envs.tasks import Task

__all__ = ["efficiency", "PER_TURN", "FREE_TURNS", "PER_TOKEN"]

PER_TURN, FREE_TURNS, PER_TOKEN = 0.05, 2, 0.0


def efficiency(trajectory: Trajectory, task: Task, *, per_turn: float = PER_TURN, free_turns: int = FREE_TURNS,
               per_token: float = PER_TOKEN) -> float:
    """``-(per_turn * max(0, turns - free_turns) + per_token * sampled tokens)``.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> spam = example_trajectory(calls=[tool_call("391")] * 3, final_answer="391")  # 4 turns, 16 sampled tokens
    >>> round(efficiency(spam, example_task()), 6), round(efficiency(spam, example_task(), per_token=0.001), 6)
    (-0.1, -0.116)
    """
    extra_turns = max(0, len(trajectory.turns) - free_turns)
    return 0.0 - (per_turn * extra_turns + per_token * trajectory.num_sampled)  # 0.0 - x: never -0.0
