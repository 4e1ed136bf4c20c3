"""The eval job's numbers: one row per episode, aggregates per policy and env, paired comparisons, the gate.

Pure functions of scored trajectories, so the report and the gate are unit-tested on fabricated episodes.

- success: the verifier's outcome (``reward_breakdown["outcome"] >= 1``), as in ``actors.evaluation``;
- reward: the weighted total of ``rewards.combine``, and each component's mean (unweighted, as logged in training);
- tool-call error rate: tool calls that failed or did not parse / all tool calls (None when there were none);
- turns: assistant turns per episode;
- safety violation rate: episodes with an unsafe action (``rewards.safety.safety``) / episodes, for envs with a
  world to harm (``STATEFUL_ENVS``); None elsewhere;
- paired comparison with the baseline on the same tasks: wins, losses, McNemar's exact p
  (``actors.evaluation.paired``); and the same for every pair of policies, later vs earlier in play order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from actors.evaluation import paired, succeeded
from actors.trajectory import Trajectory
from envs.tasks import Task
from jobs.eval_config import BASE, EVERY_ADAPTER, GateSection
from rewards.safety import STATEFUL_ENVS, safety

__all__ = ["ALL", "episode_rows", "aggregate", "summarize", "check_gate", "wilson"]

ALL = "all"  # the env key of the aggregate over every env
_NOT_COMPONENTS = {"total"}


def episode_rows(policy: str, trajectories: Sequence[Trajectory], tasks: Mapping[str, Task]) -> list[dict]:
    """One flat row per scored episode (what episodes.parquet holds)."""
    rows = []
    for t in trajectories:
        task = tasks[t.task_id]
        calls = t.tool_calls
        row = {"policy": policy, "env": t.env, "task_id": t.task_id, "sample_index": t.sample_index,
               "success": succeeded(t), "reward": float(t.reward),
               "status": t.status, "turns": len(t.turns), "tool_calls": len(calls),
               "tool_call_errors": sum(not c.ok for c in calls), "parse_errors": t.parse_errors,
               "safety_violation": (safety(t, task) < 0) if t.env in STATEFUL_ENVS else None,
               "sampled_tokens": t.num_sampled, "final_answer": t.final_answer, "answer": task.answer}
        for key, value in t.reward_breakdown.items():
            if key not in _NOT_COMPONENTS and not key.endswith("_error"):
                row[f"component/{key}"] = float(value)
        rows.append(row)
    return rows


def aggregate(rows: Sequence[dict]) -> dict:
    """The numbers of one (policy, env) cell.

    >>> m = aggregate([{"success": True, "reward": 1.5, "turns": 2, "tool_calls": 1, "tool_call_errors": 0,
    ...                 "safety_violation": None, "status": "finished", "component/outcome": 1.0},
    ...                {"success": False, "reward": -0.5, "turns": 3, "tool_calls": 3, "tool_call_errors": 2,
    ...                 "safety_violation": None, "status": "truncated", "component/outcome": 0.0}])
    >>> (m["success"], m["mean_reward"], m["tool_call_error_rate"], m["mean_turns"], m["safety_violation_rate"])
    (0.5, 0.5, 0.5, 2.5, None)
    """
    n = len(rows)
    calls = sum(r["tool_calls"] for r in rows)
    judged = [r["safety_violation"] for r in rows if r["safety_violation"] is not None]
    components = sorted({k for r in rows for k in r if k.startswith("component/")})
    return {
        "episodes": n,
        "solved": sum(bool(r["success"]) for r in rows),
        "success": _mean([bool(r["success"]) for r in rows]),
        "mean_reward": _mean([r["reward"] for r in rows]),
        "components": {k.split("/", 1)[1]: _mean([r.get(k, 0.0) for r in rows]) for k in components},
        "tool_calls": calls,
        "tool_call_errors": sum(r["tool_call_errors"] for r in rows),
        "tool_call_error_rate": sum(r["tool_call_errors"] for r in rows) / calls if calls else None,
        "calls_per_episode": calls / n if n else 0.0,
        "mean_turns": _mean([r["turns"] for r in rows]),
        "safety_violations": sum(judged),
        "safety_violation_rate": _mean(judged) if judged else None,
        "truncated_rate": _mean([r["status"] == "truncated" for r in rows]),
    }


def summarize(rows: Sequence[dict], baseline: str | None) -> dict:
    """Everything metrics.json holds: per policy, per env (and ``all``), paired against the baseline (``paired``)
    and pair by pair, later policy vs earlier (``pairs``)."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    envs = sorted({r["env"] for r in rows})
    cells: dict[str, dict] = {}
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        cells[policy] = {ALL: aggregate(mine)} | {env: aggregate([r for r in mine if r["env"] == env])
                                                  for env in envs}
    comparisons: dict[str, dict] = {}
    if baseline in policies:
        for policy in (p for p in policies if p != baseline):
            comparisons[policy] = {env: _paired(rows, baseline, policy, env) for env in cells[policy]}
    pairs = [{"before": a, "after": b} | {env: _paired(rows, a, b, env) for env in cells[b]}
             for i, a in enumerate(policies) for b in policies[i + 1:]]
    return {"policies": policies, "envs": envs, "baseline": baseline, "metrics": cells, "paired": comparisons,
            "pairs": pairs}


def check_gate(summary: dict, gate: GateSection) -> list[str]:
    """One line per missed threshold (empty: the gate passes). Thresholds apply to the all-env numbers; ``*``
    applies to every policy but the base, a policy's own entry wins over ``*``."""
    failures = []
    for rule, limits in gate.rules().items():
        for policy in summary["policies"]:
            limit = limits.get(policy, limits.get(EVERY_ADAPTER) if policy != BASE else None)
            if limit is None or (rule == "min_wins_over_baseline" and policy == summary["baseline"]):
                continue
            line = _check(rule, limit, summary, policy)
            if line:
                failures.append(f"{policy}: {line}")
    return failures


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sane at 0 and 1, unlike the normal one).

    >>> [round(x, 3) for x in wilson(0, 10)]
    [0.0, 0.278]
    """
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _check(rule: str, limit: float, summary: dict, policy: str) -> str | None:
    m = summary["metrics"][policy][ALL]
    if rule == "min_success" and m["success"] < limit:
        return f"success {m['success']:.1%} ({m['solved']}/{m['episodes']}) < min_success {limit:.1%}"
    if rule == "min_reward" and m["mean_reward"] < limit:
        return f"mean reward {m['mean_reward']:.3f} < min_reward {limit:.3f}"
    rate = m["tool_call_error_rate"]
    if rule == "max_tool_error_rate" and rate is not None and rate > limit:
        return (f"tool-call error rate {rate:.1%} ({m['tool_call_errors']}/{m['tool_calls']}) > "
                f"max_tool_error_rate {limit:.1%}")
    rate = m["safety_violation_rate"]
    if rule == "max_safety_violation_rate" and rate is not None and rate > limit:
        return f"safety violation rate {rate:.1%} ({m['safety_violations']} episodes) > max {limit:.1%}"
    if rule == "min_wins_over_baseline":
        test = summary["paired"].get(policy, {}).get(ALL)
        if test is None:
            return f"no baseline to compare with (min_wins_over_baseline {limit})"
        net = test["gained"] - test["lost"]
        if net < limit:
            return (f"net tasks gained over {summary['baseline']} {net:+d} (+{test['gained']} -{test['lost']}) < "
                    f"min_wins_over_baseline {limit}")
    return None


def _paired(rows: Sequence[dict], baseline: str, policy: str, env: str) -> dict:
    def solved(name: str) -> dict[str, bool]:
        return {f"{r['task_id']}#{r['sample_index']}": bool(r["success"]) for r in rows
                if r["policy"] == name and env in (ALL, r["env"])}

    return paired(solved(baseline), solved(policy))


def _mean(xs: Sequence) -> float:
    return float(sum(xs)) / len(xs) if xs else 0.0
