"""Support-desk episodes for the reward tests: calls played on the real env, and each kind's scripted expert."""

from __future__ import annotations

import json

from actors.trajectory import ToolCallRecord, check_invariants
from envs.support_desk import SupportDeskEnv
from envs.support_tasks import generate_tasks, scripted_expert
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls
from rewards._examples import example_trajectory


def played(task: Task, calls: list[tuple[str, dict]], final_answer: str | None, status: str = "finished"):
    """A trajectory of ``calls`` made on a fresh env (records and observations are the env's), then the reply."""
    env = SupportDeskEnv()
    env.reset(task)
    pairs = []
    for name, arguments in calls:
        step = env.step(ToolCall(name, arguments, raw="", strict=True))
        record = ToolCallRecord(0, name, json.dumps(arguments), ok=step.info["ok"], error=step.info["error"])
        pairs.append((record, step.observation))
    traj = example_trajectory(calls=pairs, final_answer=final_answer, status=status, task_id=task.task_id,
                              env="support_desk")
    assert check_invariants(traj) == []
    return traj


def expert_played(task: Task):
    """``task``'s scripted expert played on the real env: its calls, then its reply."""
    return played(task, *expert_calls(task))


def expert_calls(task: Task) -> tuple[list[tuple[str, dict]], str]:
    calls, reply = [], ""
    for m in scripted_expert(task):
        if m["role"] == "assistant":
            parsed, _ = parse_tool_calls(m["content"])
            if parsed:
                calls.append((parsed[0].name, parsed[0].arguments))
            else:
                reply = m["content"]
    return calls, reply


def one_task_per_kind() -> dict[str, Task]:
    """One support-desk task per kind; a refund with a flaky lookup and each tools_fail outage kept apart."""
    tasks = generate_tasks(60, seed=0)
    out = {}
    for t in tasks:
        kind = t.meta_value()["kind"]
        if kind == "refund_by_id" and t.meta_value().get("failures"):
            out.setdefault("flaky", t)
        elif kind == "tools_fail":
            out.setdefault(f"tools_fail:{next(iter(t.meta_value()['failures']))}", t)
        else:
            out.setdefault(kind, t)
    return out
