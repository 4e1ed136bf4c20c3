"""Invented ids: a tool call may pass only the ids the episode has already seen.

An agent given a customer's name, not an order number, can skip the search and call ``lookup_order`` with an id it
made up: the tool schema's example (``ORD-10234``) is one a small model copies. The lookup then says "not found",
and the agent tells the customer their order does not exist, which is the right ending of another task kind, so the
shortcut is well paid. ``invented_ids`` marks that turn: an id-shaped argument value (``ORD-10234``, ``CUS-1042``)
that appears neither in the task prompt nor in the result of an earlier call that ran. The system prompt and the
tool schemas are not sources: their ids are examples. A failed call's error text is not a source either, since it
may quote an example id ("order ids look like ORD-10234").

Used as a process scorer (``reward.process_weights.invented_ids``), the value lands on the inventing turn, so GRPO
with ``learner.process_reward_mode: add`` marks that turn down even when every sample of a group invents
(docs/envs/support_desk.md). Measured there: at weight 1 alone it removed the shortcut and broke the other kinds
(run 17); it says what not to do, not what to do. ``rewards.grounding`` is the search env's other grounding check:
of answers, not arguments.
"""

from __future__ import annotations

import json
import re

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.tool_shaping import call_turn, tool_results

__all__ = ["ID_PATTERN", "INVENTED", "invented_ids", "argument_ids"]

ID_PATTERN = re.compile(r"\b[A-Z]{2,5}-\d{2,}\b")  # ORD-10234, CUS-1042: the shape of every id in our envs
INVENTED = -1.0


def argument_ids(arguments: str) -> set[str]:
    """The id-shaped strings in a call's arguments (JSON text, or the raw text when it did not parse).

    >>> sorted(argument_ids('{"order_id": "ORD-10234", "customer_id": "CUS-1042", "amount": 42.5}'))
    ['CUS-1042', 'ORD-10234']
    >>> argument_ids('{"expression": "17 * 23"}')
    set()
    """
    try:
        text = json.dumps(json.loads(arguments))
    except (TypeError, ValueError):
        text = str(arguments)
    return set(ID_PATTERN.findall(text))


def invented_ids(trajectory: Trajectory, task: Task, *, invented: float = INVENTED) -> list[float]:
    """Per turn: ``invented`` when a call of the turn passes an id that neither the task prompt nor the result of
    a successful call on an earlier turn contains, else 0. Envs without such ids (calculator) score 0 everywhere.

    >>> from actors.trajectory import ToolCallRecord
    >>> from rewards._examples import example_trajectory
    >>> task = Task("t", "support_desk", "I'm Ann Lee; refund my lamp.", "{}")
    >>> made_up = (ToolCallRecord(0, "lookup_order", '{"order_id": "ORD-10234"}', ok=True),
    ...            "not found: no order ORD-10234 exists")
    >>> invented_ids(example_trajectory(calls=[made_up], final_answer="No such order.", env="support_desk"), task)
    [-1.0, 0.0]
    >>> found = (ToolCallRecord(0, "find_customer", '{"name": "Ann Lee"}', ok=True), '[{"customer_id": "CUS-7"}]')
    >>> orders = (ToolCallRecord(0, "get_customer", '{"customer_id": "CUS-7"}', ok=True), '{"orders": ["ORD-55"]}')
    >>> refund = (ToolCallRecord(0, "issue_refund", '{"order_id": "ORD-55", "customer_id": "CUS-7"}', ok=True), "ok")
    >>> invented_ids(example_trajectory(calls=[found, orders, refund], final_answer="Done.", env="support_desk"), task)
    [0.0, 0.0, 0.0, 0.0]
    """
    values = [0.0] * len(trajectory.turns)
    seen = set(ID_PATTERN.findall(task.prompt))
    pending: set[str] = set()  # ids from results of the current turn: usable from the next turn on
    turn_now = -1
    for record, result in zip(trajectory.tool_calls, tool_results(trajectory), strict=True):
        turn = call_turn(record, trajectory)
        if turn != turn_now:
            seen |= pending
            pending, turn_now = set(), turn
        if argument_ids(record.arguments) - seen:
            values[turn] = invented
        if record.ok:
            pending |= set(ID_PATTERN.findall(result))
    return values

