"""Held-out evaluation: greedy episodes on fixed tasks, task by task, and the paired test between two policies.

Success is the verifier's outcome (reward_breakdown["outcome"] >= 1), not the shaped reward, so a policy cannot
look better on eval by gaming the shaping. Two policies are compared on the *same* tasks, so the right test is
paired: McNemar's exact test on the discordant tasks (solved by one policy only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from actors.trajectory import Trajectory
from envs.tasks import Task


def succeeded(t: Trajectory) -> bool:
    """Did the episode succeed: its verifier's outcome (``reward_breakdown["outcome"]``, else the reward) is >= 1.
    The one definition of success that eval, training metrics and rollout summaries all count."""
    return t.reward_breakdown.get("outcome", t.reward) >= 1.0


def solved(trajectories: Sequence[Trajectory]) -> dict[str, bool]:
    """task_id -> solved, from one greedy episode per task."""
    return {t.task_id: succeeded(t) for t in trajectories}


def evaluate(play: Callable[..., list[Trajectory]], tasks: Sequence[Task], version: int) -> dict:
    """Greedy episodes (temperature 0) of every task under one adapter version; ``play`` is run_episodes."""
    trajectories = play(list(tasks), samples_per_task=1, temperature=0.0, version=version)
    return evaluate_batch(trajectories) | {"version": version}


def evaluate_batch(trajectories: Sequence[Trajectory]) -> dict:
    """Success rate, strictly valid first tool calls, and task_id -> solved of one greedy episode per task; with
    tasks that name a ``meta.kind`` (support_desk), the success rate per kind too, so a gain on one kind shows."""
    per_task = solved(trajectories)
    first = [next((c for c in t.tool_calls if c.turn == 0), None) for t in trajectories]
    out = {"tasks": len(per_task), "success": sum(per_task.values()) / max(1, len(per_task)),
           "valid_first_call": sum(bool(c and c.ok and c.strict) for c in first) / max(1, len(first)),
           "solved": per_task}
    by_kind = success_by_kind(trajectories)
    if by_kind:
        out["success_by_kind"] = by_kind
    return out


def kind_of(t: Trajectory) -> str | None:
    """The episode's task kind: its task's ``meta.kind``, carried in ``task_extra`` (None when it names none)."""
    kind = json.loads(t.task_extra or "{}").get("meta", {}).get("kind")
    return None if kind is None else str(kind)


def success_by_kind(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Outcome success rate per task kind (the task's ``meta.kind``, carried in ``task_extra``), over episodes;
    empty when no task names a kind (calculator). Training logs it per step (``success/<kind>``): a kind that is
    never solved in sampled episodes gives GRPO nothing to reinforce, whatever greedy eval says."""
    kinds: dict[str, list[bool]] = {}
    for t in trajectories:
        kind = kind_of(t)
        if kind is not None:
            kinds.setdefault(kind, []).append(succeeded(t))
    return {k: sum(v) / len(v) for k, v in sorted(kinds.items())}


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under H0 each discordant task is gained or lost with probability 1/2."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(before: dict[str, bool], after: dict[str, bool]) -> dict:
    """Compare two evaluations of the same tasks: gained/lost tasks and McNemar's p."""
    if before.keys() != after.keys():
        raise ValueError("paired comparison needs the same tasks in both evaluations; "
                         f"{len(before.keys() ^ after.keys())} task ids differ. Fix: evaluate on one fixed task list")
    gained = sum(after[k] and not before[k] for k in before)
    lost = sum(before[k] and not after[k] for k in before)
    return {"tasks": len(before), "before": sum(before.values()), "after": sum(after.values()),
            "gained": gained, "lost": lost, "p_value": mcnemar_p(gained, lost)}
