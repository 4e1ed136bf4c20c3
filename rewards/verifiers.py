"""Outcome reward: the env's own verifier applied to the final answer. This is the reward the task is about; every
other component is shaping that must stay smaller than it (``RewardConfig.validate`` checks the bound).
"""

from __future__ import annotations

from collections.abc import Callable

from actors.trajectory import Trajectory
from envs import calculator, datetime_env, python_env, search_env, support_desk, weather_env
from envs.tasks import Task
from rewards.safety import state_outcome

__all__ = ["VERIFIERS", "STATE_VERIFIERS", "Verifier", "outcome", "verifier_for"]

Verifier = Callable[[Task, str], "bool | float"]

# Env name -> verify(task, text): True (or a score in [0, 1]) when ``text`` answers the task. A new env adds its own.
VERIFIERS: dict[str, Verifier] = {"calculator": calculator.verify, "python": python_env.verify,
                                  "datetime": datetime_env.verify, "search": search_env.verify,
                                  "weather": weather_env.verify, "support_desk": support_desk.verify}
# Envs whose outcome is the state the episode left behind, not the text: replayed from the trajectory's tool calls
# on a fresh seeded world (pure, so it also scores trajectories read back from Parquet).
STATE_VERIFIERS: dict[str, Callable[[Trajectory, Task], float]] = {"support_desk": state_outcome}


def verifier_for(env: str) -> Verifier:
    """The verifier of ``env``; LookupError naming the known envs and the fix when there is none."""
    verify = VERIFIERS.get(env)
    if verify is None:
        raise LookupError(f"no verifier for env {env!r}; known: {', '.join(sorted(VERIFIERS))}. "
                          "Fix: add the env's verify function to rewards.verifiers.VERIFIERS")
    return verify


def outcome(trajectory: Trajectory, task: Task) -> float:
    """1.0 when the env's verifier accepts the final answer, 0.0 otherwise; 0.0 without a finished final answer.

    >>> from rewards._examples import example_task, example_trajectory
    >>> task = example_task(answer=391)
    >>> outcome(example_trajectory(final_answer="17 * 23 = 391."), task)
    1.0
    >>> outcome(example_trajectory(final_answer="It is 381."), task)
    0.0
    >>> outcome(example_trajectory(final_answer=None, status="truncated"), task)
    0.0
    """
    if trajectory.status != "finished" or not isinstance(trajectory.final_answer, str):
        return 0.0
    if task.env in STATE_VERIFIERS:
        return float(STATE_VERIFIERS[task.env](trajectory, task))
    return float(verifier_for(task.env)(task, trajectory.final_answer))
