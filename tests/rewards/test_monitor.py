"""The reward-hacking monitor on synthetic metric histories, and per-component statistics (hand values)."""

from __future__ import annotations

import doctest
import math
import random

import pytest

import rewards.monitor as monitor_module
from rewards import RewardActor, RewardConfig, hacking_flag, hacking_report, hacking_warning, reward_stats, trend
from rewards._examples import example_task, example_trajectory, tool_call


def test_doctests():
    assert doctest.testmod(monitor_module).failed == 0


def steps(outcome, **shaping):
    """One reward_stats-like dict per step from per-component series of batch means."""
    return [{"outcome/mean": o, **{f"{k}/mean": v[i] for k, v in shaping.items()}} for i, o in enumerate(outcome)]


def linear(start, per_step, n, noise=0.0, rng=None):
    return [start + per_step * i + (rng.gauss(0, noise) if noise else 0.0) for i in range(n)]


# ---- the trend fit ----


def test_trend_by_hand():
    # x = 0..5 (mean 2.5, Sxx = 17.5); y = [0.5]*3 + [0.3]*3: slope = -0.2 * (0.5 + 1.5 + 2.5) / 17.5 = -0.0514286
    # fitted 0.52857 .. 0.27143, residuals +-0.02857, +-0.02286, +-0.07429: SSR = 0.013714, s^2 = SSR / 4
    # se = sqrt(0.0034286 / 17.5) = 0.013997, t = -3.6742
    slope, t = trend([0.5, 0.5, 0.5, 0.3, 0.3, 0.3])
    assert slope == pytest.approx(-0.0514286, abs=1e-6) and t == pytest.approx(-3.674235, abs=1e-5)
    assert trend([0.0, 1.0, 2.0]) == (1.0, math.inf)
    assert trend([3.0, 1.0, 2.0]) == (-0.5, pytest.approx(-0.5 / math.sqrt(1.5 / 2)))  # SSR 1.5, Sxx 2
    with pytest.raises(ValueError, match=">= 3 points"):
        trend([1.0, 2.0])


# ---- the alarm ----


def test_rising_format_and_falling_outcome_flags():
    rng = random.Random(0)
    history = steps(linear(0.7, -0.04, 8, 0.01, rng), format=linear(0.3, 0.08, 8, 0.01, rng))
    report = hacking_report(history, window=8)
    assert report["flag"] and set(report["rising"]) == {"format"}
    assert report["outcome_change"] == pytest.approx(-0.28, abs=0.03) and report["rising"]["format"] > 0.5
    line = hacking_warning(report)
    assert line.startswith("WARNING reward hacking?") and "format +0." in line and "outcome fell (-0.2" in line


def test_both_rising_is_learning_not_hacking():
    history = steps(linear(0.3, 0.05, 6), format=linear(0.2, 0.1, 6), tool_use=linear(0.0, 0.04, 6))
    assert not hacking_flag(history, shaping=["format", "tool_use"])


def test_outcome_falling_with_flat_shaping_is_not_flagged():
    assert not hacking_flag(steps(linear(0.8, -0.1, 6), format=[0.9] * 6))


def test_noise_does_not_flag_and_the_t_test_is_what_stops_it():
    # 500 runs of pure noise (batch-mean sd 0.1 around flat lines), three shaping components. The fitted change of
    # a noise line over 6 steps has sd 0.1 * 5 / sqrt(17.5) = 0.12, so a magnitude threshold of 0.05 alone fires
    # often; requiring 2 standard errors as well keeps false alarms rare.
    rng = random.Random(1)
    names = ["format", "tool_use", "process_mean"]
    histories = [steps(linear(0.5, 0.0, 6, 0.1, rng), **{k: linear(0.5, 0.0, 6, 0.1, rng) for k in names})
                 for _ in range(500)]
    with_t = sum(hacking_flag(h, shaping=names) for h in histories) / len(histories)
    without_t = sum(hacking_flag(h, shaping=names, min_t=0.0) for h in histories) / len(histories)
    assert with_t <= 0.02, with_t
    assert without_t >= 0.15, without_t


def test_one_odd_batch_does_not_flag_but_a_lasting_change_does():
    spike = steps([0.5] * 5 + [0.2], format=[0.2] * 5 + [0.9])  # t = -1.73 / +1.73 on the last step alone
    assert not hacking_flag(spike)
    lasting = steps([0.5] * 4 + [0.2] * 2, format=[0.2] * 4 + [0.9] * 2)
    assert hacking_flag(lasting)


def test_any_named_shaping_component_counts_and_missing_ones_are_skipped():
    outcome = [0.5] * 3 + [0.3] * 3
    history = steps(outcome, format=[0.5] * 6, process_mean=[0.0] * 3 + [0.2] * 3)
    assert not hacking_flag(history)  # default shaping: format, tool_use
    assert hacking_report(history, shaping=["format", "process_mean"])["rising"] == {
        "process_mean": pytest.approx(0.2 * 4.5 / 17.5 * 5)}
    del history[2]["process_mean/mean"]
    history.append(dict(history[-1]))
    assert not hacking_flag(history[:6], shaping=["process_mean"])  # a gap in the series: no verdict on it


def test_window_is_the_most_recent_steps_and_short_histories_are_not_flagged():
    hack = steps([0.5] * 3 + [0.3] * 3, format=[0.2] * 3 + [0.9] * 3)
    assert hacking_flag(hack) and not hacking_flag(hack[:5])
    assert hacking_report(hack[:5]) == {"flag": False, "outcome_change": None, "rising": {}, "window": 6}
    recovered = hack + steps([0.6] * 6, format=[0.9] * 6)
    assert not hacking_flag(recovered)
    with pytest.raises(ValueError, match="window"):
        hacking_flag(hack, window=2)
    assert hacking_warning(hacking_report(recovered)) == ""


# ---- per-component statistics ----


def test_reward_stats_per_component_and_per_turn_by_hand():
    task = {"a": example_task(answer=391)}
    batch = [example_trajectory(calls=[tool_call("391")], final_answer="391", task_id="a"),
             example_trajectory(calls=[tool_call("error: x", ok=False)], final_answer="390", task_id="a")]
    plain = reward_stats(RewardActor().score_batch(batch, task))
    assert not any(k.startswith("turn_reward/") for k in plain)  # no process rewards: no per-turn stats
    scored = RewardActor(RewardConfig(process_weights={"tool_call_validity": 1.0})).score_batch(batch, task)
    stats = reward_stats(scored)
    # tool_use per episode: 0.3, -0.2 -> mean 0.05, population std 0.25, min -0.2, max 0.3
    assert stats["tool_use/mean"] == pytest.approx(0.05) and stats["tool_use/std"] == pytest.approx(0.25)
    assert (stats["tool_use/min"], stats["tool_use/max"]) == (pytest.approx(-0.2), pytest.approx(0.3))
    # turns: [0.1, 0.0] and [-0.2, 0.0] -> mean -0.025, min -0.2, max 0.1; process_mean per episode 0.05, -0.1
    assert stats["turn_reward/mean"] == pytest.approx(-0.025)
    assert (stats["turn_reward/min"], stats["turn_reward/max"]) == (pytest.approx(-0.2), pytest.approx(0.1))
    assert stats["turn_reward/std"] == pytest.approx(math.sqrt((0.125**2 + 0.025**2 + 0.175**2 + 0.025**2) / 4))
    assert stats["process_mean/mean"] == pytest.approx(-0.025) and stats["process_mean/std"] == pytest.approx(0.075)
