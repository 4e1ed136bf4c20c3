from __future__ import annotations

import copy

import pytest

from actors.trajectory import read_parquet, write_parquet
from jobs.config_loader import ConfigError
from rewards import RewardActor, RewardConfig, hacking_flag
from rewards._examples import example_task, example_trajectory, parse_error, tool_call

TASKS = {"a": example_task(answer=391), "b": example_task(answer=12, expression="3 * 4")}


def batch():
    a_right = example_trajectory(calls=[tool_call("391")], final_answer="391", task_id="a")
    a_right.turns[0].reward = 0.25  # a process reward set upstream: must survive scoring
    return [
        a_right,
        example_trajectory(calls=[tool_call("error: bad", ok=False)], final_answer="390", task_id="a"),
        example_trajectory(calls=[parse_error()], final_answer=None, status="truncated", task_id="b"),
        example_trajectory(final_answer="12", task_id="b"),
    ]


def test_score_batch_sets_reward_and_breakdown():
    scored = RewardActor(RewardConfig()).score_batch(batch(), TASKS)
    assert [round(t.reward, 6) for t in scored] == [1.4, -0.1, -0.2, 1.1]
    for t in scored:
        assert set(t.reward_breakdown) == {"outcome", "format", "tool_use", "efficiency", "total"}
        assert t.reward_breakdown["total"] == t.reward
    assert scored[0].turns[0].reward == 0.25


def test_score_batch_does_not_mutate_its_input():
    trajectories = batch()
    before = copy.deepcopy(trajectories)
    scored = RewardActor().score_batch(trajectories, TASKS)
    assert trajectories == before
    assert all(s is not t for s, t in zip(scored, trajectories, strict=True))
    assert trajectories[0].reward == 0.0 and trajectories[0].reward_breakdown == {}


def test_score_batch_missing_task_names_it():
    with pytest.raises(KeyError, match="task_id 'zz'"):
        RewardActor().score_batch([example_trajectory(final_answer="1", task_id="zz")], TASKS)


def test_score_batch_contains_scorer_errors():
    odd = example_trajectory(final_answer="391", task_id="c")
    tasks = {"c": example_task(answer=391, env="unknown-env")}
    (scored,) = RewardActor().score_batch([odd], tasks)
    assert scored.reward_breakdown["outcome_error"] == 1.0
    assert scored.reward_breakdown["outcome"] == 0.0
    stats = RewardActor().stats([scored])
    assert stats["outcome_error/mean"] == 1.0


def test_scored_batch_round_trips_through_parquet(tmp_path):
    scored = RewardActor().score_batch(batch(), TASKS)
    back = read_parquet(write_parquet(scored, tmp_path / "step.parquet"))
    assert [t.reward_breakdown["tool_use"] for t in back] == pytest.approx([0.3, -0.2, -0.2, 0.0])


def test_invalid_config_fails_at_construction():
    with pytest.raises(ConfigError, match="weights.outcome: must be > 0"):
        RewardActor(RewardConfig(weights={"outcome": 0.0}))


def test_stats():
    stats = RewardActor().stats(RewardActor().score_batch(batch(), TASKS))
    assert stats["count"] == 4
    assert stats["outcome/mean"] == pytest.approx(0.5)
    assert stats["outcome/min"] == 0.0 and stats["outcome/max"] == 1.0
    assert stats["tool_use/min"] == pytest.approx(-0.2) and stats["tool_use/max"] == pytest.approx(0.3)
    assert stats["total/std"] > 0
    assert RewardActor().stats([]) == {"count": 0}


def _history(outcome, fmt, tool=None):
    tool = tool or [0.0] * len(outcome)
    rows = zip(outcome, fmt, tool, strict=True)
    return [{"outcome/mean": o, "format/mean": f, "tool_use/mean": t} for o, f, t in rows]


@pytest.mark.parametrize(
    ("outcome", "fmt", "tool", "expected"),
    [
        ([0.5] * 3 + [0.3] * 3, [0.2] * 3 + [0.9] * 3, None, True),  # format up, outcome down
        ([0.5] * 3 + [0.3] * 3, [0.5] * 6, [0.0] * 3 + [0.3] * 3, True),  # tool use farmed, outcome down
        ([0.3] * 3 + [0.5] * 3, [0.2] * 3 + [0.9] * 3, None, False),  # both rise: learning
        ([0.5] * 3 + [0.3] * 3, [0.9] * 3 + [0.2] * 3, None, False),  # both fall: collapse, not hacking
        ([0.5] * 3 + [0.48] * 3, [0.2] * 3 + [0.9] * 3, None, False),  # outcome flat within min_change
        ([0.5, 0.3], [0.2, 0.9], None, False),  # too short a history
    ],
)
def test_hacking_flag(outcome, fmt, tool, expected):
    assert hacking_flag(_history(outcome, fmt, tool)) is expected
    assert RewardActor.hacking_flag(_history(outcome, fmt, tool)) is expected


def test_hacking_flag_looks_at_the_recent_window_only():
    old_hack = _history([0.5] * 3 + [0.3] * 3 + [0.6] * 6, [0.2] * 3 + [0.9] * 9)
    assert hacking_flag(old_hack[:6]) and not hacking_flag(old_hack)
    with pytest.raises(ValueError):
        hacking_flag(old_hack, window=1)
