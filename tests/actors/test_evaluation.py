"""Held-out evaluation helpers: McNemar's exact test against hand values, and the paired comparison."""

from __future__ import annotations

import math

import pytest

from dataclasses import replace

from actors.evaluation import evaluate_batch, mcnemar_p, paired
from rewards._examples import example_trajectory


def test_mcnemar_exact_matches_hand_values():
    assert mcnemar_p(10, 0) == pytest.approx(2 / 2 ** 10)  # all ten discordant tasks went one way
    assert mcnemar_p(0, 10) == mcnemar_p(10, 0)  # two-sided
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    # 20 gained, 4 lost: 2 * P(X <= 4), X ~ Binomial(24, 1/2)
    assert mcnemar_p(20, 4) == pytest.approx(2 * sum(math.comb(24, k) for k in range(5)) / 2 ** 24)
    assert mcnemar_p(20, 4) < 0.01 < mcnemar_p(12, 4)


def test_paired_counts_gained_and_lost_tasks():
    before = {"a": True, "b": False, "c": False, "d": True}
    after = {"a": True, "b": True, "c": True, "d": False}
    result = paired(before, after)
    assert (result["before"], result["after"], result["gained"], result["lost"]) == (2, 3, 2, 1)
    assert result["p_value"] == pytest.approx(1.0)


def test_paired_refuses_different_task_sets():
    with pytest.raises(ValueError, match="same tasks"):
        paired({"a": True}, {"b": True})


def test_success_is_broken_down_by_task_kind_when_tasks_name_one():
    def episode(task_id, kind, outcome):
        t = example_trajectory(final_answer="1", task_id=task_id)
        extra = '{"meta": {"kind": "%s"}}' % kind if kind else "{}"
        return replace(t, task_extra=extra, reward_breakdown={"outcome": outcome})

    result = evaluate_batch([episode("a", "refund", 1.0), episode("b", "refund", 0.0), episode("c", "handoff", 1.0)])
    assert result["success"] == pytest.approx(2 / 3)
    assert result["success_by_kind"] == {"handoff": 1.0, "refund": 0.5}
    assert "success_by_kind" not in evaluate_batch([episode("a", None, 1.0)])  # calculator tasks have no kind
