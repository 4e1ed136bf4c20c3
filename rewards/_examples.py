"""Tiny crafted calculator trajectories for the scorers' doctests and the reward tests (not used in training).

A built trajectory is shaped the way ``actors.episode`` writes one: one assistant turn per tool call, each record
followed by exactly one ``tool`` message holding its result, then (when given) a final-answer turn. Token ids are
placeholders, but the structural invariants (``actors.trajectory.check_invariants``) hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from actors.trajectory import ToolCallRecord, Trajectory, Turn
from envs.tasks import Task

__all__ = ["example_task", "tool_call", "parse_error", "example_trajectory"]

_SAMPLED_PER_TURN = 4  # placeholder sampled tokens per assistant turn
_RUNNER_PER_TURN = 2  # placeholder runner tokens (end of turn, tool result, next header) after each turn


def example_task(answer: int | float = 391, expression: str = "17 * 23", env: str = "calculator") -> Task:
    """A calculator task whose ground truth is ``answer`` (JSON), asking for ``expression``."""
    return Task("t0", env, f"What is {expression}?", json.dumps(answer), json.dumps({"expression": expression}))


def tool_call(result: str, *, ok: bool = True, strict: bool = True, expression: str = "17 * 23",
              name: str = "calculator") -> tuple[ToolCallRecord, str]:
    """A call that was parsed and dispatched, with the observation the model saw (``error: ...`` when not ok)."""
    record = ToolCallRecord(0, name, json.dumps({"expression": expression}), ok=ok,
                            error=None if ok else result.removeprefix("error: "), strict=strict)
    return record, result


def parse_error(raw: str = '{"name": calculator}') -> tuple[ToolCallRecord, str]:
    """A call the parser could not read: recorded by the runner with no name, ok False, strict False."""
    message = "invalid JSON in tool call"
    return ToolCallRecord(0, "", raw, ok=False, error=message, strict=False), f"error: {message}"


def example_trajectory(*, calls: Sequence[tuple[ToolCallRecord, str]] = (), final_answer: str | None,
                       status: str = "finished", task_id: str = "t0", env: str = "calculator") -> Trajectory:
    """An episode that made ``calls`` (one per turn) and then answered ``final_answer`` (None: no answer turn)."""
    messages: list[dict] = [{"role": "system", "content": "calculator"}, {"role": "user", "content": "What is?"}]
    records, turns, completion, mask = [], [], [], []

    def add_turn() -> None:
        start = len(completion)
        completion.extend(range(100 + start, 100 + start + _SAMPLED_PER_TURN))
        mask.extend([1] * _SAMPLED_PER_TURN)
        turns.append(Turn(start, len(completion)))
        completion.extend([7] * _RUNNER_PER_TURN)
        mask.extend([0] * _RUNNER_PER_TURN)

    for record, result in calls:
        add_turn()
        body = record.arguments if not record.name else json.dumps({"name": record.name,
                                                                    "arguments": json.loads(record.arguments)})
        messages.append({"role": "assistant", "content": f"<tool_call>{body}</tool_call>"})
        messages.append({"role": "tool", "content": result})
        records.append(ToolCallRecord(len(turns) - 1, record.name, record.arguments, record.ok, record.error,
                                      record.latency_s, record.strict))
    if final_answer is not None:
        add_turn()
        messages.append({"role": "assistant", "content": final_answer})
    sampled = sum(mask)
    return Trajectory(
        task_id=task_id, env=env, group_id=task_id, sample_index=0, prompt_ids=[1, 2, 3], completion_ids=completion,
        loss_mask=mask, behavior_logprobs=[-0.5] * sampled, messages=messages, turns=turns, tool_calls=records,
        final_answer=final_answer, status=status, parse_errors=sum(1 for r in records if not r.name),
    )
