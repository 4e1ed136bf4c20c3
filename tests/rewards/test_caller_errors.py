"""The caller-errors process scorer on support-desk episodes played through the real env (``rewards.caller_errors``)."""

from __future__ import annotations

import doctest

import pytest

from envs import base as base_module
from rewards import PROCESS_SCORERS, RewardConfig
from rewards import caller_errors as caller_module
from rewards.caller_errors import caller_errors
from rewards.process import process_rewards, tool_call_validity
from tests.rewards.support_play import expert_played, played

pytestmark = pytest.mark.timeout(60)


def test_doctests():
    assert doctest.testmod(caller_module).failed == 0
    assert doctest.testmod(base_module).failed == 0


def test_no_expert_episode_makes_a_caller_error(by_kind):
    for kind, task in by_kind.items():
        traj = expert_played(task)
        assert caller_errors(traj, task) == [0.0] * len(traj.turns), kind


def test_a_tool_that_is_down_is_not_the_callers_fault(by_kind):
    """The experts retry a failing tool (then escalate, or go on): validity marks the retries, this does not."""
    for kind in ("tools_fail:find_customer", "tools_fail:lookup_order", "flaky"):
        task = by_kind[kind]
        traj = expert_played(task)
        failed = [r for r in traj.tool_calls if not r.ok]
        assert failed and all("service unavailable" in r.error for r in failed), kind
        assert min(tool_call_validity(traj, task)) < 0, kind
        assert caller_errors(traj, task) == [0.0] * len(traj.turns), kind


def test_get_customers_argument_passed_to_find_customer_is_marked_on_each_turn(by_kind):
    """Run 23's by_name drift (docs/envs/support_desk.md): found the customer, then the wrong tool, repeated."""
    task = by_kind["by_name"]
    name = task.meta_value()["customer_name"]
    found = played(task, [("find_customer", {"name": name})], None)
    customer_id = found.messages[3]["content"].split('"customer_id": "')[1].split('"')[0]
    wrong = ("find_customer", {"customer_id": customer_id})
    traj = played(task, [("find_customer", {"name": name}), wrong, wrong], None, status="truncated")
    assert [r.ok for r in traj.tool_calls] == [True, False, False]
    assert traj.tool_calls[1].error.startswith("invalid arguments for 'find_customer'")
    assert caller_errors(traj, task) == [0.0, -1.0, -1.0]
    unknown = played(task, [("refund_order", {"order_id": "ORD-1"})], "Done.")
    assert caller_errors(unknown, task, error=-0.5) == [-0.5, 0.0]


def test_it_is_a_process_scorer_the_config_accepts_and_logs(by_kind):
    assert PROCESS_SCORERS["caller_errors"] is caller_errors
    cfg = RewardConfig(process_weights={"caller_errors": 0.5})
    assert cfg.validate() == []
    task = by_kind["by_name"]
    traj = played(task, [("find_customer", {"customer_id": "CUS-1"})], "Sorry.")
    turns, parts = process_rewards(traj, task, cfg.process_weights, cfg.process_params)
    assert turns == [-0.5, 0.0] and parts["process_caller_errors"] == -0.5
    assert "process_caller_errors_error" not in parts
