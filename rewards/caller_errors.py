"""Caller errors: a turn whose call the env rejected before running it (``envs.base.caller_error``).

``tool_call_validity`` marks down every failed call, so on support_desk it also marks down the retry of a tool that
is down (``service unavailable (503)``), which is the right move before escalating. This scorer marks only the
caller's own mistakes: a call that could not be read, an unknown tool, or arguments the schema rejects.

Aimed at a drift measured on support_desk (run 23, docs/envs/support_desk.md): by-name episodes that found the
customer then called ``find_customer`` again with ``get_customer``'s argument (``{"customer_id": ...}``), and
repeated that call after each "invalid arguments" error until the turns ran out. Only penalties, so it cannot be
farmed; as a process scorer (``reward.process_weights.caller_errors``) the value lands on the turn that made the
mistake, and GRPO with ``learner.process_reward_mode: add`` marks that turn down even when every sample makes it.
"""

from __future__ import annotations

from actors.trajectory import Trajectory
from envs.base import caller_error
from envs.tasks import Task
from rewards.tool_shaping import call_turn

__all__ = ["CALLER_ERROR", "caller_errors"]

CALLER_ERROR = -1.0


def caller_errors(trajectory: Trajectory, task: Task, *, error: float = CALLER_ERROR) -> list[float]:
    """Per turn: ``error`` when a call of the turn was the caller's mistake, else 0 (a call that ran, a tool that
    failed on its own, a turn without calls). ``task`` is unused.

    >>> from actors.trajectory import ToolCallRecord
    >>> from rewards._examples import example_task, example_trajectory, parse_error
    >>> found = (ToolCallRecord(0, "find_customer", '{"name": "Ann Lee"}', ok=True), '[{"customer_id": "CUS-7"}]')
    >>> message = "invalid arguments for 'find_customer': unexpected 'customer_id'"
    >>> wrong = (ToolCallRecord(0, "find_customer", '{"customer_id": "CUS-7"}', ok=False, error=message),
    ...          "error: " + message)
    >>> down = (ToolCallRecord(0, "find_customer", '{"name": "Ann Lee"}', ok=False, error="service unavailable (503)"),
    ...         "error: service unavailable (503)")
    >>> caller_errors(example_trajectory(calls=[found, wrong, wrong, parse_error()], final_answer=None), example_task())
    [0.0, -1.0, -1.0, -1.0]
    >>> caller_errors(example_trajectory(calls=[down, down], final_answer="Escalated."), example_task(), error=-0.5)
    [0.0, 0.0, 0.0]
    """
    values = [0.0] * len(trajectory.turns)
    for record in trajectory.tool_calls:
        if not record.ok and caller_error(record.name, record.error):
            values[call_turn(record, trajectory)] = error
    return values
