"""The training job's reward logging: per-component stats per step and the reward-hacking flag (no Ray here)."""

from __future__ import annotations

import pytest

from jobs.config import RunConfig
from jobs.train import _batch_metrics, _hacking_check
from rewards import RewardActor, RewardConfig
from rewards._examples import example_task, example_trajectory, tool_call


def _batch(outcome: float, fmt: float) -> list:
    """Four episodes whose breakdown means are ``outcome`` and ``fmt`` (two at 0, two at twice the mean)."""
    out = []
    for i in range(4):
        t = example_trajectory(final_answer="1")
        high = i % 2
        t.reward_breakdown = {"outcome": 2 * outcome * high, "format": 2 * fmt * high, "tool_use": 0.0,
                              "total": 0.0}
        out.append(t)
    return out


def test_batch_metrics_log_mean_std_min_max_per_component_and_process_rewards():
    batch = [example_trajectory(calls=[tool_call("391")], final_answer="391", task_id="a"),
             example_trajectory(calls=[tool_call("error: x", ok=False)], final_answer="390", task_id="a")]
    cfg = RewardConfig(process_weights={"tool_call_validity": 1.0})
    m = _batch_metrics(RewardActor(cfg).score_batch(batch, {"a": example_task(answer=391)}))
    assert m["reward/outcome"] == 0.5 and m["reward/outcome/std"] == 0.5
    assert (m["reward/outcome/min"], m["reward/outcome/max"]) == (0.0, 1.0)
    assert m["reward/process_mean"] == pytest.approx(-0.025)  # turns [0.1, 0] and [-0.2, 0]
    assert m["reward/turn_reward/min"] == pytest.approx(-0.2)
    assert "reward/count" not in m
    assert not any(k.startswith("success/") for k in m)  # calculator tasks name no kind


def test_batch_metrics_log_sampled_success_per_task_kind():
    """A kind GRPO never sees solved in its samples gets no positive advantage (stop 20): the log shows it."""
    from dataclasses import replace

    def episode(kind: str, outcome: float):
        t = example_trajectory(final_answer="1")
        return replace(t, task_extra='{"meta": {"kind": "%s"}}' % kind,
                       reward_breakdown={"outcome": outcome, "total": outcome})

    m = _batch_metrics([episode("by_name", 0.0), episode("by_name", 0.0), episode("tools_fail", 1.0),
                        episode("tools_fail", 0.0)])
    assert (m["success/by_name"], m["success/tools_fail"], m["success"]) == (0.0, 0.5, 0.25)


def test_hacking_check_raises_the_flag_only_when_format_rises_as_outcome_falls():
    cfg = RunConfig()
    history: list[dict] = []
    flags = [_hacking_check(_batch(o, f), history, cfg)["flag"]
             for o, f in [(0.6, 0.2)] * 3 + [(0.3, 0.9)] * 3]
    assert flags == [False] * 5 + [True]
    assert len(history) == cfg.reward.monitor_window
    history.clear()
    flags = [_hacking_check(_batch(o, f), history, cfg)["flag"] for o, f in [(0.3, 0.2)] * 3 + [(0.6, 0.9)] * 3]
    assert flags == [False] * 6
