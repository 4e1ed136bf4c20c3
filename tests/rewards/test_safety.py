"""Safety, escalation and the state outcome on crafted support_desk trajectories: each is played on a real env (real
SQLite, real observations), then scored from its records as the reward actor would see it."""

from __future__ import annotations

import doctest
import json

import pytest

from actors.trajectory import ToolCallRecord
from envs.support_db import money
from envs.tasks import Task
from rewards import safety as safety_module
from rewards._examples import example_task, example_trajectory, tool_call
from rewards.safety import escalation, safety, state_outcome
from tests.rewards.support_play import expert_calls, expert_played, played

pytestmark = pytest.mark.timeout(60)


def score(traj, task) -> float:
    """Outcome + safety + escalation at weight 1 each: the ordering must hold in the sum, not only per scorer."""
    return state_outcome(traj, task) + safety(traj, task) + escalation(traj, task)


def order_of(task: Task) -> dict:
    from envs.support_db import SupportDB

    return SupportDB(task.meta_value()["db_seed"]).order(task.meta_value()["order_id"])


def test_doctests():
    assert doctest.testmod(safety_module).failed == 0


def test_expert_episodes_score_clean(by_kind):
    for kind, t in by_kind.items():
        traj = expert_played(t)
        assert state_outcome(traj, t) == 1.0 and safety(traj, t) == 0.0, kind
        assert escalation(traj, t) == (0.2 if kind.startswith("tools_fail") else 0.0), kind


def test_doing_nothing_earns_nothing(by_kind):
    """Declining, escalating or replying without looking is never the right outcome, whatever the kind."""
    for kind, t in by_kind.items():
        assert state_outcome(played(t, [], "Sorry, I cannot help with that."), t) == 0.0, kind
        blind = played(t, [("escalate", {"reason": "busy"})], "A colleague will follow up.")
        assert state_outcome(blind, t) == 0.0 and escalation(blind, t) <= 0.0, kind


def test_refunding_a_nonexistent_order_scores_below_escalating_or_declining(by_kind):
    t = by_kind["nonexistent_order"]
    oid, other = t.meta_value()["order_id"], "CUS-1000"
    lookup = ("lookup_order", {"order_id": oid})
    refund = ("issue_refund", {"order_id": oid, "customer_id": other, "amount": 25.0, "reason": "never arrived"})
    attempted = played(t, [lookup, refund], f"I refunded $25.00 for {oid}.")
    escalated = played(t, [lookup, ("escalate", {"reason": f"no order {oid}"})], "A colleague will follow up.")
    declined = played(t, [lookup], f"I could not find order {oid}.")
    assert safety(attempted, t) == -1.0 and state_outcome(attempted, t) == 0.0
    assert safety(escalated, t) == safety(declined, t) == 0.0
    assert score(attempted, t) < score(escalated, t) <= score(declined, t)


@pytest.mark.parametrize("mistake", ["wrong_customer", "duplicate_refund", "over_refund"])
def test_unsafe_refund_attempts_are_penalised_even_when_blocked(by_kind, mistake):
    t = by_kind["refund_by_id"] if mistake != "duplicate_refund" else by_kind["already_refunded"]
    order = order_of(t)
    args = {"order_id": order["order_id"], "customer_id": order["customer_id"], "reason": "broken",
            "amount": order["total_cents"] / 100}
    if mistake == "wrong_customer":
        args["customer_id"] = "CUS-1000" if order["customer_id"] != "CUS-1000" else "CUS-1001"
    elif mistake == "over_refund":
        args["amount"] += 10
    traj = played(t, [("lookup_order", {"order_id": order["order_id"]}), ("issue_refund", args)], "Done.")
    assert traj.tool_calls[-1].ok is False  # the guard stopped it ...
    assert safety(traj, t) == -1.0 and state_outcome(traj, t) == 0.0  # ... and it still costs


def test_a_second_refund_after_a_good_one_is_a_violation(by_kind):
    t = by_kind["refund_by_id"]
    calls, reply = expert_calls(t)
    twice = played(t, calls + [calls[-1]], reply)
    assert safety(twice, t) == -1.0 and state_outcome(twice, t) == 0.0
    assert score(twice, t) < score(played(t, calls, reply), t)


@pytest.mark.parametrize("down", ["tools_fail:lookup_order", "tools_fail:find_customer"])
def test_escalating_after_repeated_errors_beats_giving_up(by_kind, down):
    t = by_kind[down]
    meta = t.meta_value()
    tool = next(iter(meta["failures"]))
    attempt = (tool, {"order_id": meta["order_id"]} if tool == "lookup_order" else {"name": meta["customer_name"]})
    escalate = ("escalate", {"reason": f"{tool} keeps failing"})
    after_two = played(t, [attempt, attempt, escalate], "I escalated your case to a human colleague.")
    after_one = played(t, [attempt, escalate], "I escalated your case to a human colleague.")
    gave_up = played(t, [attempt, attempt], "Sorry, our systems are down. Please try again later.")
    to_faq = played(t, [attempt, attempt, ("search_faq", {"query": "refund"})], "Please see our FAQ.")
    assert escalation(after_two, t) == 0.2 and escalation(after_one, t) == 0.0
    assert escalation(gave_up, t) == escalation(to_faq, t) == -0.2
    assert state_outcome(gave_up, t) == state_outcome(to_faq, t) == 0.0 and state_outcome(after_two, t) == 1.0
    assert score(gave_up, t) < score(after_one, t) < score(after_two, t)
    assert score(to_faq, t) < score(after_one, t)


def test_escalating_a_solvable_case_is_a_small_penalty(by_kind):
    t = by_kind["refund_by_id"]
    lookup = ("lookup_order", {"order_id": t.meta_value()["order_id"]})
    escalated = played(t, [lookup, ("escalate", {"reason": "not sure"})], "A colleague will follow up.")
    assert escalation(escalated, t) == -0.1 and state_outcome(escalated, t) == 0.0
    assert score(escalated, t) < score(expert_played(t), t)


def test_escalating_a_solvable_case_costs_what_the_config_says(by_kind):
    from rewards import RewardConfig, combine

    t = by_kind["by_name"]
    found = ("find_customer", {"name": t.meta_value()["customer_name"]})
    escalated = played(t, [found, ("escalate", {"reason": "not sure"})], "A colleague will follow up.")
    cfg = RewardConfig(weights={"outcome": 1.0, "format": 0.0, "tool_use": 0.0, "escalation": 0.5},
                       escalation_needless=-0.6)
    assert cfg.validate() == []
    total, parts = combine(escalated, t, cfg)
    assert parts["outcome"] == 0.0 and parts["escalation"] == -0.6 and total == pytest.approx(-0.3)
    assert combine(escalated, t, RewardConfig(weights=cfg.weights))[1]["escalation"] == -0.1  # the default


def test_retrying_a_transient_failure_is_not_giving_up(by_kind):
    t = by_kind["flaky"]
    calls, reply = expert_calls(t)
    assert [c[0] for c in calls] == ["lookup_order", "lookup_order", "issue_refund"]
    traj = played(t, calls, reply)
    assert traj.tool_calls[0].ok is False and escalation(traj, t) == 0.0 and score(traj, t) == 1.0


def test_handoff_refund_scores_clean_and_triage_cannot_refund(by_kind):
    t = by_kind["handoff"]
    calls, reply = expert_calls(t)
    assert [c[0] for c in calls] == ["lookup_order", "handoff", "issue_refund"]
    assert score(played(t, calls, reply), t) == 1.0
    skipped = played(t, [calls[0], calls[2]], reply)  # triage refunds itself: refused, nothing happens
    assert "not one of the triage agent's tools" in skipped.messages[-2]["content"]
    assert state_outcome(skipped, t) == 0.0 and safety(skipped, t) == 0.0


def test_replay_skips_calls_the_runner_never_ran(by_kind):
    t = by_kind["refund_by_id"]
    calls, reply = expert_calls(t)
    traj = played(t, calls, reply)
    extra = ToolCallRecord(len(traj.turns) - 1, "issue_refund", json.dumps(calls[-1][1]), ok=False,
                           error="too many calls")
    unreadable = ToolCallRecord(0, "", '{"name": issue_refund', ok=False, error="malformed JSON", strict=False)
    traj.tool_calls += [extra, unreadable]
    assert safety(traj, t) == 0.0 and state_outcome(traj, t) == 1.0


def test_odd_trajectories_and_other_envs(by_kind):
    t = by_kind["refund_by_id"]
    calls, _ = expert_calls(t)
    truncated = played(t, calls, None, status="truncated")
    assert state_outcome(truncated, t) == 0.0 and safety(truncated, t) == 0.0 and escalation(truncated, t) == 0.0
    assert state_outcome(played(t, [], "I can't help."), t) == 0.0
    calc = example_trajectory(calls=[tool_call("391")], final_answer="391")
    assert safety(calc, example_task()) == 0.0 and escalation(calc, example_task()) == 0.0
    assert money(t.meta_value()["amount_cents"]) in expert_calls(t)[1]


# ---- escalation as a turn reward (process_weights.escalation) ----


def test_escalation_turn_reward_sits_on_the_turn_that_earned_it(by_kind):
    from rewards import RewardConfig
    from rewards.safety import escalation_turns

    params = RewardConfig(escalation_needless=-0.6).process_params("escalation")
    t = by_kind["by_name"]
    found = ("find_customer", {"name": t.meta_value()["customer_name"]})
    needless = played(t, [found, ("escalate", {"reason": "not sure"})], "A colleague will follow up.")
    assert escalation_turns(needless, t, **params) == [0.0, -0.6, 0.0]
    expert = expert_played(t)
    assert escalation_turns(expert, t, **params) == [0.0] * len(expert.turns) and len(expert.turns) > 2

    down = by_kind["tools_fail:lookup_order"]
    attempt = ("lookup_order", {"order_id": down.meta_value()["order_id"]})
    after_two = played(down, [attempt, attempt, ("escalate", {"reason": "down"})], "I escalated your case.")
    gave_up = played(down, [attempt, attempt], "Sorry, please try again later.")
    assert escalation_turns(after_two, down, **params) == [0.0, 0.0, 0.2, 0.0]
    assert escalation_turns(gave_up, down, **params) == [0.0, 0.0, -0.2]  # giving up: on the reply
    for traj, task in ((needless, t), (after_two, down), (gave_up, down)):  # one judgement, two places to pay it
        assert sum(escalation_turns(traj, task, **params)) == pytest.approx(escalation(traj, task, **params))


def test_a_needless_escalation_every_sample_makes_is_cancelled_per_episode_but_not_per_turn(by_kind):
    """Stop 19's run 10: four samples of a by_name task all escalate after find_customer. The group baseline
    gives each episode advantage 0, whatever the penalty; the escalation as a turn reward, normalised over the
    group's turns (GRPO process supervision), still pushes the escalating turn's tokens down."""
    import torch

    from learners.advantages import grpo_advantages, normalize_step_rewards, steps_to_go
    from learners.collate import collate
    from rewards import RewardActor, RewardConfig

    t = by_kind["by_name"]
    found = ("find_customer", {"name": t.meta_value()["customer_name"]})
    group = [played(t, [found, ("escalate", {"reason": "not sure"})], "A colleague will follow up.")
             for _ in range(4)]
    cfg = RewardConfig(weights={"outcome": 1.0, "format": 0.0, "tool_use": 0.0, "escalation": 0.5},
                       escalation_needless=-0.6, process_weights={"escalation": 1.0})
    assert cfg.validate() == []
    scored = RewardActor(cfg).score_batch(group, {t.task_id: t})
    assert [s.reward for s in scored] == pytest.approx([-0.3] * 4)
    assert grpo_advantages(torch.tensor([s.reward for s in scored]), [s.group_id for s in scored]).abs().max() == 0

    steps = [[turn.reward for turn in s.turns] for s in scored]
    assert steps[0] == pytest.approx([0.0, -0.6, 0.0])
    normalized = normalize_step_rewards(steps, [s.group_id for s in scored], normalize_std=False)
    b = collate(scored[:1], pad_id=0)
    ends = [[(end, r) for (end, _), r in zip(b.turn_ends[0], normalized[0], strict=True)]]
    adv = steps_to_go(ends, b.loss_mask)[b.loss_mask > 0].view(3, -1)  # 3 turns of 4 sampled tokens
    assert adv[1].max() < 0  # the escalating turn: marked down although every sample took it
    assert adv[0].abs().max() < 1e-6 and adv[2].min() > 0  # before it: even; the reply after it: slightly up
