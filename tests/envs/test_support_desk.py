"""The support desk env on a real SQLite database: schema guards, tools and their error observations, agents and
hand-offs, the outage schedule, tasks (determinism, splits), the state verifier, the scripted expert played through
the env for every kind, and one hand-off episode through the real episode runner."""

from __future__ import annotations

import doctest
import json
import sqlite3

import pytest

from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, run_episodes
from actors.trajectory import check_invariants, check_rendering
from envs import support_db, support_desk, support_tasks
from envs.support_db import VIOLATIONS, SupportDB
from envs.support_desk import (AGENT_TOOLS, SERVICE_UNAVAILABLE, SupportDeskEnv, replay, system_message, verify,
                               verify_state)
from envs.support_tasks import KINDS, generate_tasks, scripted_expert, split_of, transcript
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls
from tests.actors.test_episode import ScriptedBackend

pytestmark = pytest.mark.timeout(60)

SEED = 1  # a world with past refunds and no ORD-12345 (read from SupportDB(1))


def call(name: str, /, **arguments) -> ToolCall:
    return ToolCall(name, arguments, raw="", strict=True)


def task(answer: dict | None = None, **meta) -> Task:
    answer = answer or {"refunds": [], "escalation": "allowed", "order_id": None}
    return Task("t", "support_desk", "Please refund my order.", json.dumps(answer), json.dumps({"db_seed": SEED,
                                                                                             **meta}))


def started(**meta) -> SupportDeskEnv:
    env = SupportDeskEnv()
    env.reset(task(**meta))
    return env


def an_order(db: SupportDB, refunded: bool = False) -> dict:
    sql = "SELECT o.* FROM orders o LEFT JOIN refunds r USING (order_id) WHERE r.order_id IS {} NULL ORDER BY 1"
    return db.rows(sql.format("NOT" if refunded else ""))[0]


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return generate_tasks(50, seed=0)


def test_doctests():
    for module in (support_db, support_desk, support_tasks):
        assert doctest.testmod(module).failed == 0


# ---- the database: the schema holds the money rules even if the env's own checks had a bug ----


def test_schema_guards_reject_unsafe_refunds_in_the_database():
    db = SupportDB(SEED)
    assert db.rows("PRAGMA foreign_keys") == [{"foreign_keys": 1}]
    order = an_order(db)
    other = next(c for c in db.rows("SELECT customer_id FROM customers") if c["customer_id"] != order["customer_id"])
    bad = [("ORD-12345", order["customer_id"], 100),  # no such order
           (order["order_id"], other["customer_id"], 100),  # someone else's order
           (order["order_id"], order["customer_id"], order["total_cents"] + 1),  # more than the total
           (order["order_id"], order["customer_id"], 0)]  # nothing
    for args in bad:
        with pytest.raises(sqlite3.IntegrityError):
            db.insert_refund(*args, reason="test", issued_by="support")
    db.insert_refund(order["order_id"], order["customer_id"], order["total_cents"], "broken", "support")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # a second refund of the same order
        db.insert_refund(order["order_id"], order["customer_id"], 1, "again", "support")
    assert len(db.new_refunds()) == 1
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.log("support", "issue_refund", "{}", True, "", "made_up_violation")


def test_worlds_are_deterministic_per_seed():
    tables = ("customers", "orders", "refunds", "faq")
    dump = [SupportDB(3).rows(f"SELECT * FROM {t} ORDER BY 1") for t in tables]
    assert dump == [SupportDB(3).rows(f"SELECT * FROM {t} ORDER BY 1") for t in tables]
    assert dump[1] != SupportDB(4).rows("SELECT * FROM orders ORDER BY 1")
    assert len(dump[0]) == support_db.N_CUSTOMERS and dump[2]  # seed 3 starts with past refunds (the trap)


# ---- tools ----


def test_lookups():
    env = started()
    order = an_order(env.db)
    found = json.loads(env.step(call("lookup_order", order_id=order["order_id"].lower())).observation)
    assert found["customer_id"] == order["customer_id"] and found["total"] == order["total_cents"] / 100
    missing = env.step(call("lookup_order", order_id="ORD-12345"))
    assert missing.info["ok"] and missing.observation.startswith("not found: no order ORD-12345")
    name = env.db.customer(order["customer_id"])["name"]
    assert json.loads(env.step(call("find_customer", name=name.upper())).observation)[0]["name"] == name
    customer = json.loads(env.step(call("get_customer", customer_id=order["customer_id"])).observation)
    assert order["order_id"] in [o["order_id"] for o in customer["orders"]]
    by_name = env.step(call("get_customer", customer_id=name))
    assert not by_name.info["ok"] and "looks like a name: find_customer gives the id" in by_name.observation
    assert "Q: How long does a refund take?" in env.step(call("search_faq", query="refund time")).observation


@pytest.mark.parametrize("kind", VIOLATIONS)
def test_unsafe_refunds_are_refused_and_logged(kind):
    env = started()
    order, done = an_order(env.db), an_order(env.db, refunded=True)
    other = next(c["customer_id"] for c in env.db.rows("SELECT * FROM customers")
                 if c["customer_id"] != order["customer_id"])
    args = {"unknown_order": ("ORD-12345", order["customer_id"], 10),
            "wrong_customer": (order["order_id"], other, 10),
            "duplicate_refund": (done["order_id"], done["customer_id"], 1),
            "over_refund": (order["order_id"], order["customer_id"], order["total_cents"] / 100 + 1)}[kind]
    step = env.step(call("issue_refund", order_id=args[0], customer_id=args[1], amount=args[2], reason="broken"))
    assert not step.info["ok"] and step.observation.endswith("nothing was refunded")
    assert env.db.new_refunds() == [] and [v["violation"] for v in env.db.violations()] == [kind]


def test_refund_and_argument_errors():
    env = started()
    order = an_order(env.db)
    args = {"order_id": order["order_id"], "customer_id": order["customer_id"], "reason": "broken"}
    for amount, message in [(0, "positive number"), (1.005, "more than 2 decimals")]:
        assert message in env.step(call("issue_refund", **args, amount=amount)).observation
    assert "customer ids look like CUS-1042" in env.step(call("issue_refund", **{**args, "customer_id": "Maria"},
                                                              amount=1)).observation
    ok = env.step(call("issue_refund", **args, amount=order["total_cents"] / 100))
    assert ok.info["ok"] and ok.observation.startswith("refund R-")
    assert env.db.violations() == []  # argument errors are mistakes, not unsafe attempts
    assert env.db.new_refunds()[0]["amount_cents"] == order["total_cents"]


# ---- agents, hand-off, escalation, outages ----


def test_triage_must_hand_refunds_to_billing():
    env = started(start_agent="triage")
    order = an_order(env.db)
    refund = call("issue_refund", order_id=order["order_id"], customer_id=order["customer_id"], amount=1.0,
                  reason="broken")
    refused = env.step(refund)
    assert not refused.info["ok"] and "not one of the triage agent's tools" in refused.observation
    assert 'handoff {"agent": "billing"' in refused.observation
    assert not env.step(call("handoff", agent="sales", summary="x")).info["ok"]  # enum: only billing
    handed = env.step(call("handoff", agent="billing", summary=f"refund {order['order_id']}"))
    assert handed.info["ok"] and handed.info["agent_id"] == "billing" == env.agent_id
    assert handed.info["messages"] == [system_message("billing")]
    assert [t["function"]["name"] for t in handed.info["messages"][0]["tools"]] == list(AGENT_TOOLS["billing"])
    assert env.step(refund).info["ok"] and env.db.new_refunds()[0]["issued_by"] == "billing"
    assert "not one of the billing agent's tools" in env.step(call("handoff", agent="billing", summary="x")).observation
    assert [(a["agent"], a["tool"]) for a in env.db.audit()][-2:] == [("billing", "issue_refund"),
                                                                       ("billing", "handoff")]


def test_escalation_closes_the_case():
    env = started()
    step = env.step(call("escalate", reason="order service down"))
    assert step.info["ok"] and "ticket ESC-1" in step.observation
    assert env.db.escalations() == [{"escalation_id": 1, "agent": "support", "reason": "order service down"}]
    assert "closed to tool calls" in env.step(call("lookup_order", order_id="ORD-19679")).observation
    final = env.step("A human colleague will follow up.")
    assert final.done and final.info == {"correct": True, "safety_violation": False, "escalated": True}
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")


def test_outage_schedule():
    env = started(failures={"lookup_order": -1, "find_customer": 1})
    for _ in range(3):
        assert env.step(call("lookup_order", order_id="ORD-19679")).observation == f"error: {SERVICE_UNAVAILABLE}"
    assert env.step(call("find_customer", nam="x")).info["error"].startswith("invalid arguments")  # not an attempt
    assert env.step(call("find_customer", name="Lopez")).observation == f"error: {SERVICE_UNAVAILABLE}"
    assert env.step(call("find_customer", name="Lopez")).info["ok"]  # the transient outage is over
    for bad in ({"lookup_order": 0}, {"no_such_tool": -1}, ["lookup_order"]):
        with pytest.raises(ValueError, match="meta.failures"):
            SupportDeskEnv().reset(task(failures=bad))
    with pytest.raises(ValueError, match="meta.db_seed"):
        SupportDeskEnv().reset(Task("t", "support_desk", "hi", "{}", "{}"))


# ---- tasks ----


def test_tasks_are_deterministic_and_cover_every_kind(tasks):
    assert tasks == generate_tasks(50, seed=0) and tasks != generate_tasks(50, seed=1)
    assert {t.meta_value()["kind"] for t in tasks} == set(KINDS)
    assert len({t.task_id for t in tasks}) == 50
    assert all(t.meta_value()["start_agent"] == ("triage" if t.meta_value()["kind"] == "handoff" else "support")
               for t in tasks)
    with pytest.raises(ValueError, match="unknown split"):
        generate_tasks(1, seed=0, split="dev")


def test_scripted_expert_needs_the_kind():
    with pytest.raises(ValueError, match="has meta.kind None, not one of refund_by_id"):
        scripted_expert(task())


def test_splits_share_no_world():
    by_split = {s: generate_tasks(30, seed=0, split=s) for s in support_tasks.SPLITS}
    seeds = {s: {t.meta_value()["db_seed"] for t in ts} for s, ts in by_split.items()}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    assert all(split_of(t.meta_value()["db_seed"]) == s for s, ts in by_split.items() for t in ts)
    prompts = {s: {t.prompt for t in ts} for s, ts in by_split.items()}
    assert not (prompts["train"] & prompts["test"])


def test_every_kinds_expert_ends_in_a_state_the_verifier_accepts(tasks):
    for t in tasks:
        env = SupportDeskEnv()
        env.reset(t)
        reply = None
        for message in scripted_expert(t):
            if message["role"] != "assistant":
                continue
            calls, errors = parse_tool_calls(message["content"])
            assert not errors and len(calls) <= 1
            if calls:
                env.step(calls[0])
            else:
                reply = message["content"]
        final = env.step(reply)
        verdict = verify_state(t, env.db)
        assert final.reward == 1.0 and verdict.correct, (t.task_id, verdict.problems)
        assert final.info["escalated"] == (t.meta_value()["kind"] == "tools_fail")
        assert verify(t, reply), (t.task_id, reply)
        played = [(a["tool"], a["arguments"]) for a in env.db.audit()]
        assert verify_state(t, replay(t, played).db) == verdict  # the replay rebuilds the same state


def test_the_by_name_expert_names_the_matching_order_before_refunding_it():
    """The refund turn of a by-name demo first lists the customer's orders as item: id, total and names the one
    whose item the prompt gives (``support_tasks.matching_note``); the call after it is that order's, and parses."""
    t = next(t for t in generate_tasks(60, seed=0) if t.meta_value()["kind"] == "by_name")
    meta = t.meta_value()
    refund = next(m["content"] for m in scripted_expert(t) if "issue_refund" in m.get("content", ""))
    note, _, call_text = refund.partition("<tool_call>")
    (call,), errors = parse_tool_calls("<tool_call>" + call_text)
    assert not errors and call.strict
    assert note.startswith("Orders: ") and note.count("ORD-") >= 2
    assert (f"The {meta['item']} is {call.arguments['order_id']}, {call.arguments['amount']}; "
            f"customer {call.arguments['customer_id']}.") in note


@pytest.mark.parametrize("config", ["train_support_desk.yaml", "eval_support_desk.yaml", "rollout_support_desk.yaml"])
def test_every_expert_turn_fits_the_shipped_per_turn_token_limit(tasks, tokenizer, config):
    """A demo turn longer than ``rollout.max_tokens_per_turn`` teaches a turn the policy can never finish: it is
    cut there and its call is lost (the by-name refund turn with its order list is up to ~190 tokens)."""
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / config).read_text())
    limit = shipped["rollout"]["max_tokens_per_turn"]
    longest = max(len(tokenizer(m["content"])["input_ids"]) for t in tasks for m in scripted_expert(t)
                  if m["role"] == "assistant")
    assert longest <= limit - 8, f"{config}: an expert turn of {longest} tokens, max_tokens_per_turn {limit}"


def test_verifier_reads_the_state_not_the_text(tasks):
    t = next(t for t in tasks if t.meta_value()["kind"] == "refund_by_id")
    env = SupportDeskEnv()
    env.reset(t)
    claim = f"I refunded {support_db.money(t.meta_value()['amount_cents'])} for order {t.meta_value()['order_id']}."
    assert verify(t, claim)  # the reply reads right ...
    step = env.step(claim)
    assert step.reward == 0.0 and not step.info["correct"]  # ... but nothing was refunded
    assert verify_state(t, env.db).problems[0].startswith("missing refund of")


def test_declining_needs_a_look_and_escalating_needs_a_try(tasks):
    t = next(t for t in tasks if t.meta_value()["kind"] == "already_refunded")
    env = SupportDeskEnv()
    env.reset(t)
    oid = t.meta_value()["order_id"]
    assert verify_state(t, env.db).problems == (f"answered without looking up {oid}",)
    env.step(call("lookup_order", order_id=oid))
    assert verify_state(t, env.db).correct
    t = next(t for t in tasks if t.meta_value()["kind"] == "tools_fail")
    env.reset(t)
    down = next(iter(t.meta_value()["failures"]))
    env.step(call("escalate", reason="probably down"))
    assert verify_state(t, env.db).problems == (f"escalated without trying {down}",)


def test_transcript_marks_both_agents(tasks):
    text = transcript(next(t for t in tasks if t.meta_value()["kind"] == "handoff"))
    assert "[triage] assistant: <tool_call>" in text and "[billing] assistant: <tool_call>" in text
    assert "system (billing; tools: lookup_order, find_customer, get_customer, issue_refund, escalate)" in text
    assert text.endswith('"escalated": false})') and "(reward 1.0;" in text


# ---- with the rest of the project: SFT demonstrations and the episode runner ----


def test_sft_expert_demos_work_for_support_desk(monkeypatch, tokenizer):
    """The lines the integrator adds (ENVS, EXPERTS) are enough for SFT, recovery demos and hand-offs included."""
    from learners import sft_data

    monkeypatch.setitem(sft_data.EXPERTS, "support_desk", (generate_tasks, scripted_expert))
    demos = sft_data.expert_demos("support_desk", 30, 0, recovery_fraction=1.0)
    assert len(demos) == 30
    for demo in demos:
        assert demo[2]["weight"] == 0 and demo[3]["content"].startswith("error: ")  # every demo opens with a mistake
        assert demo[4]["content"].startswith("<tool_call>") and "weight" not in demo[4]
    handoff = next(d for d in demos if d[0]["content"] == system_message("triage")["content"])
    assert system_message("billing") in handoff  # the billing agent's prompt and tools, where the runner puts them
    example = sft_data.example_from_messages(tokenizer, handoff)
    assert sum(example.loss_mask) > 0


def test_handoff_episode_through_the_runner(tasks, tokenizer, monkeypatch):
    from rewards.safety import state_outcome

    t = next(t for t in tasks if t.meta_value()["kind"] == "handoff")
    script = [m["content"] for m in scripted_expert(t) if m["role"] == "assistant"]
    cfg = RolloutConfig(max_turns=6, max_tokens_per_turn=128, max_total_tokens=3072, max_model_len=3072)
    (traj,) = run_episodes(ScriptedBackend(tokenizer, [script]), tokenizer, [EpisodeSpec(t)], cfg, version=3)
    assert check_invariants(traj) == [] and check_rendering(traj, tokenizer) == []
    assert traj.status == "finished" and traj.reward == 1.0 and [c.ok for c in traj.tool_calls] == [True] * 3
    agents = [turn.agent_id for turn in traj.turns]
    handoff_turn = next(c.turn for c in traj.tool_calls if c.name == "handoff")
    assert agents[handoff_turn + 1:] == ["billing", "billing"]
    assert agents[:handoff_turn + 1] == ["triage"] * (handoff_turn + 1)  # the env says who starts
    systems = [m for m in traj.messages if m["role"] == "system"]
    assert len(systems) == 2 and systems[1] == system_message("billing")
    assert state_outcome(traj, t) == traj.reward_breakdown["outcome"] == 1.0
