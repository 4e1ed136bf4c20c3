"""The invented-ids process scorer on support-desk episodes played through the real env (``rewards.invented_ids``)."""

from __future__ import annotations

import doctest

import pytest

from rewards import PROCESS_SCORERS, RewardConfig
from rewards import invented_ids as invented_module
from rewards.invented_ids import invented_ids
from rewards.process import process_rewards
from tests.rewards.support_play import expert_played, played

pytestmark = pytest.mark.timeout(60)
EXAMPLE_ORDER = "ORD-10234"  # the lookup_order schema's example id (envs/support_desk.py)


def test_doctests():
    assert doctest.testmod(invented_module).failed == 0


def test_no_expert_episode_invents_an_id(by_kind):
    """Every kind's scripted expert, the hand-off included: its ids come from the prompt or earlier results."""
    for kind, task in by_kind.items():
        traj = expert_played(task)
        assert invented_ids(traj, task) == [0.0] * len(traj.turns), kind


def test_the_schema_example_id_for_a_customer_given_by_name_is_invented(by_kind):
    """The warm start's main failure (docs/envs/support_desk.md): a by_name customer, a made-up order looked up."""
    task = by_kind["by_name"]
    assert EXAMPLE_ORDER not in task.prompt
    traj = played(task, [("lookup_order", {"order_id": EXAMPLE_ORDER})], f"I couldn't find an order {EXAMPLE_ORDER}.")
    assert traj.tool_calls[0].ok  # the env answered "not found": the call ran, the id was still made up
    assert invented_ids(traj, task) == [-1.0, 0.0]
    # found, then a customer id that was never shown: only that turn is marked
    name = task.meta_value()["customer_name"]
    traj = played(task, [("find_customer", {"name": name}), ("get_customer", {"customer_id": "CUS-9999"})], "Sorry.")
    assert invented_ids(traj, task, invented=-0.5) == [0.0, -0.5, 0.0]


def test_an_id_quoted_by_an_error_is_not_a_source(by_kind):
    """A failed call's error text quotes the example id ("order ids look like ORD-10234"); copying it invents."""
    task = by_kind["by_name"]
    traj = played(task, [("lookup_order", {"order_id": "7"}), ("lookup_order", {"order_id": EXAMPLE_ORDER})],
                  "No such order.")
    assert not traj.tool_calls[0].ok and EXAMPLE_ORDER in traj.messages[3]["content"]
    assert invented_ids(traj, task) == [0.0, -1.0, 0.0]  # "7" is no id: a malformed call, not an invented one


def test_an_id_the_customer_gave_is_grounded_even_when_it_does_not_exist(by_kind):
    task = by_kind["nonexistent_order"]
    order_id = task.meta_value()["order_id"]
    assert order_id in task.prompt
    traj = played(task, [("lookup_order", {"order_id": order_id})], f"I couldn't find an order {order_id}.")
    assert invented_ids(traj, task) == [0.0, 0.0]


def test_it_is_a_process_scorer_the_config_accepts_and_logs(by_kind):
    assert PROCESS_SCORERS["invented_ids"] is invented_ids
    cfg = RewardConfig(process_weights={"invented_ids": 1.0})
    assert cfg.validate() == []
    task = by_kind["by_name"]
    traj = played(task, [("lookup_order", {"order_id": EXAMPLE_ORDER})], "No such order.")
    turns, parts = process_rewards(traj, task, cfg.process_weights, cfg.process_params)
    assert turns == [-1.0, 0.0] and parts["process_invented_ids"] == -0.5 and "process_invented_ids_error" not in parts
