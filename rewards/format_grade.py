"""Format reward: did the episode follow the tool-call contract (DESIGN.md) and end with an answer?

Graded so each step towards the exact Hermes format is worth something, in this order:

==========  =====================================================================================================
1.0         finished with a non-empty final answer; every tool call strict JSON with a name, no parse errors
            (an episode with no tool call at all also scores 1.0: it broke no format rule; ``tool_use`` is the
            component that cares whether the tool was used)
0.5         finished and every call readable, but at least one needed a tolerant repair (``strict`` False:
            single quotes, a number where a string belongs, ...)
0.25        finished, but at least one call could not be read at all (a parse error the model recovered from)
0.0         truncated, error, or no (or an empty) final answer
==========  =====================================================================================================
"""

from __future__ import annotations

from actors.trajectory import Trajectory
from envs.tasks import Task

__all__ = ["format_validity", "STRICT", "REPAIRED", "UNREADABLE", "UNFINISHED"]

STRICT, REPAIRED, UNREADABLE, UNFINISHED = 1.0, 0.5, 0.25, 0.0


def format_validity(trajectory: Trajectory, task: Task) -> float:
    """The format grade of the table above (``task`` is unused: format does not depend on the question).

    >>> from rewards._examples import example_task, example_trajectory, parse_error, tool_call
    >>> task = example_task()
    >>> format_validity(example_trajectory(calls=[tool_call("391")], final_answer="391"), task)
    1.0
    >>> format_validity(example_trajectory(calls=[tool_call("391", strict=False)], final_answer="391"), task)
    0.5
    >>> format_validity(example_trajectory(calls=[parse_error(), tool_call("391")], final_answer="391"), task)
    0.25
    >>> format_validity(example_trajectory(calls=[tool_call("391")], final_answer=None, status="truncated"), task)
    0.0
    """
    answer = trajectory.final_answer
    if trajectory.status != "finished" or not isinstance(answer, str) or not answer.strip():
        return UNFINISHED
    calls = trajectory.tool_calls
    if trajectory.parse_errors > 0 or any(not c.name for c in calls):
        return UNREADABLE
    if any(not c.strict for c in calls):
        return REPAIRED
    return STRICT
