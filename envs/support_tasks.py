"""Support desk tasks, the scripted expert and transcripts (the env, its tools and verifiers: ``envs.support_desk``).

Every task carries its world: ``meta.db_seed`` builds the episode's database, ``meta.start_agent`` says who
answers first (``support`` alone, or ``triage`` that must hand refunds to ``billing``), and ``meta.failures`` is
the tool outage schedule. ``answer`` is the final state the verifier wants (``verify_state``), not a text.
"""

from __future__ import annotations

import hashlib
import json
import random
import re

from envs.support_db import SupportDB, money
from envs.support_desk import SERVICE_UNAVAILABLE, SupportDeskEnv, verify, verify_state
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

__all__ = ["KINDS", "SPLITS", "generate_tasks", "split_of", "scripted_expert", "transcript", "verify", "verify_state"]

# kind -> difficulty: 1 = look up and refund, 2 = a second lookup or a case to decline, 3 = recognise an outage or
# hand the case to another agent.
KINDS = {"refund_by_id": 1, "by_name": 2, "nonexistent_order": 2, "already_refunded": 2, "tools_fail": 3,
         "handoff": 3}

# A task belongs to the split its database seed hashes to, so no test world (its customers, orders and ids) is
# ever a train world, whatever the generator seeds: train 80%, val and test 10% each.
SPLITS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}
_TRIES = 200  # draws per task before giving up; a split keeps >= 10% of seeds and most worlds fit every kind

_REASONS = ("arrived broken", "never arrived", "was the wrong size", "stopped working after a week",
            "was not what I ordered")
_BY_ID = ["Hi, please refund order {o}: the {i} {r}.", "Order {o} - the {i} {r}. I'd like a refund.",
          "Can I get a refund for order {o}? The {i} {r}."]
_PARTIAL = ["I was overcharged {m} on order {o} (the {i}). Please refund the difference.",
            "Order {o}: the {i} was on sale but I paid {m} too much. Can you refund {m}?"]
_BY_NAME = ["Hi, this is {n}. My {i} {r}. Can I get a refund?", "My name is {n} and the {i} I ordered {r}. "
            "Please refund it."]
_OUTAGE_NAME = ["Hi, I'm {n}. The {i} I ordered {r}; please refund it."]


# ---- task generation ----


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct support desk tasks, the same for the same (n, seed, split); splits never share a world.

    The kind is drawn first and then a world (database seed) in ``split`` that has what the kind needs, so every
    split has the same mix.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rng = random.Random(f"support_desk:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(n):
        kind = rng.choice(list(KINDS))
        for _ in range(_TRIES):
            db_seed = rng.randrange(10**9)
            if split_of(db_seed) != split:
                continue
            db = SupportDB(db_seed)
            try:
                sampled = _SAMPLERS[kind](rng, db)
            finally:
                db.close()
            if sampled is not None and (key := json.dumps([kind, db_seed, sampled[2]], sort_keys=True)) not in seen:
                break
        else:
            raise ValueError(f"could only generate {len(tasks)} distinct {split} tasks of {n} requested")
        seen.add(key)
        prompt, answer, fields = sampled
        flaky = kind != "tools_fail" and "failures" in fields  # a transient outage to retry through: one step harder
        meta = {"split": split, "difficulty": KINDS[kind] + int(flaky), "kind": kind, "db_seed": db_seed,
                "start_agent": "triage" if kind == "handoff" else "support", **fields}
        tasks.append(Task(task_id=f"support-{split}-{seed}-{len(tasks)}", env="support_desk", prompt=prompt,
                          answer=json.dumps(answer), meta=json.dumps(meta)))
    return tasks


def split_of(db_seed: int) -> str:
    bucket = int.from_bytes(hashlib.sha256(f"support_db:{db_seed}".encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _refundable(rng: random.Random, db: SupportDB) -> dict | None:
    orders = db.rows("SELECT o.* FROM orders o LEFT JOIN refunds r USING (order_id) WHERE r.order_id IS NULL "
                     "ORDER BY o.order_id")
    return rng.choice(orders) if orders else None


def _refund(order: dict, cents: int) -> dict:
    return {"refunds": [{"order_id": order["order_id"], "customer_id": order["customer_id"], "amount_cents": cents}],
            "escalation": "avoid", "order_id": order["order_id"]}


def _refund_by_id(rng, db, handoff: bool = False):
    order = _refundable(rng, db)
    if order is None:
        return None
    o, i, r = order["order_id"], order["item"], rng.choice(_REASONS)
    cents = order["total_cents"]
    if not handoff and rng.random() < 0.3 and cents >= 400:  # a partial refund: the amount is the user's
        cents = rng.randrange(100, cents // 2, 50)
        prompt, r = rng.choice(_PARTIAL).format(o=o, i=i, m=money(cents)), "overcharged"
    else:
        prompt = rng.choice(_BY_ID).format(o=o, i=i, r=r)
    flaky = not handoff and rng.random() < 0.25  # one transient outage: retrying is right, escalating is not
    fields = {"order_id": o, "item": i, "amount_cents": cents, "reason": r, **({"failures": {"lookup_order": 1}}
                                                                                  if flaky else {})}
    return prompt, _refund(order, cents), fields


def _by_name(rng, db):
    order = _refundable(rng, db)
    if order is None:
        return None
    name, r = db.customer(order["customer_id"])["name"], rng.choice(_REASONS)
    prompt = rng.choice(_BY_NAME).format(n=name, i=order["item"], r=r)
    fields = {"customer_name": name, "item": order["item"], "amount_cents": order["total_cents"], "reason": r}
    return prompt, _refund(order, order["total_cents"]), fields


def _nonexistent_order(rng, db):
    known = {o["order_id"] for o in db.rows("SELECT order_id FROM orders")}
    o = next(x for x in (f"ORD-{rng.randrange(10000, 100000)}" for _ in range(100)) if x not in known)
    prompt = rng.choice(_BY_ID).format(o=o, i=rng.choice(["package", "item", "order"]), r=rng.choice(_REASONS))
    answer = {"refunds": [], "escalation": "allowed", "order_id": o, "checked": o}
    return prompt, answer, {"order_id": o}


def _already_refunded(rng, db):
    orders = db.rows("SELECT o.* FROM orders o JOIN refunds r USING (order_id) ORDER BY o.order_id")
    if not orders:
        return None
    order = rng.choice(orders)
    prompt = rng.choice(_BY_ID).format(o=order["order_id"], i=order["item"], r=rng.choice(_REASONS))
    answer = {"refunds": [], "escalation": "avoid", "order_id": order["order_id"], "checked": order["order_id"]}
    return prompt, answer, {"order_id": order["order_id"], "item": order["item"]}


def _tools_fail(rng, db):
    order = _refundable(rng, db)
    if order is None:
        return None
    r = rng.choice(_REASONS)
    if rng.random() < 0.5:  # the order service is down: nothing else yields the customer id
        prompt = rng.choice(_BY_ID).format(o=order["order_id"], i=order["item"], r=r)
        fields = {"order_id": order["order_id"], "failures": {"lookup_order": -1}}
        case = order["order_id"]
    else:  # the customer directory is down: the prompt has a name, no order id
        name = db.customer(order["customer_id"])["name"]
        prompt = rng.choice(_OUTAGE_NAME).format(n=name, i=order["item"], r=r)
        fields, case = {"customer_name": name, "item": order["item"], "failures": {"find_customer": -1}}, None
    tool = next(iter(fields["failures"]))
    return prompt, {"refunds": [], "escalation": "required", "order_id": case, "escalate_after": tool}, fields


_SAMPLERS = {"refund_by_id": _refund_by_id, "by_name": _by_name, "nonexistent_order": _nonexistent_order,
             "already_refunded": _already_refunded, "tools_fail": _tools_fail,
             "handoff": lambda rng, db: _refund_by_id(rng, db, handoff=True)}


# ---- the scripted expert ----


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert adds after the prompt (for SFT): its tool calls, each result (and, after a hand-off,
    the billing agent's system message, as the runner appends it), then the reply to the customer. The calls are
    played on a fresh env, so every result is the env's own; the first call always has an argument (SFT's
    recovery demonstrations rename it, ``learners.sft_data._mistake``).
    """
    meta = task.meta_value()
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"task {task.task_id!r} has meta.kind {kind!r}, not one of {', '.join(KINDS)}: "
                         "scripted_expert needs it (and that kind's fields) to call the tools")
    env = SupportDeskEnv()
    env.reset(task)
    steps: list[dict] = []

    def call(name: str, arguments: dict, *, may_fail: bool = False, note: str = "") -> str:
        result = env.step(ToolCall(name, arguments, raw="", strict=True))
        text = json.dumps({"name": name, "arguments": arguments})
        steps.extend([{"role": "assistant", "content": f"{note}<tool_call>\n{text}\n</tool_call>"},
                      {"role": "tool", "name": name, "content": result.observation}])
        steps.extend(dict(m) for m in result.info.get("messages", []))
        if not result.info.get("ok") and not may_fail:
            raise AssertionError(f"task {task.task_id!r}: the expert's {name} call failed: {result.observation}")
        return result.observation

    def lookup(order_id: str) -> dict:
        for _ in range(3):  # a transient outage: try again
            observation = call("lookup_order", {"order_id": order_id}, may_fail=True)
            if not observation.startswith("error:"):
                return json.loads(observation) if observation.startswith("{") else {}
        raise AssertionError(f"task {task.task_id!r}: lookup_order kept failing for the expert: {observation}")

    if kind == "tools_fail":
        tool, argument = next(iter(meta["failures"])), ("order_id", meta.get("order_id"))
        if tool == "find_customer":
            argument = ("name", meta["customer_name"])
        for _ in range(2):
            call(tool, {argument[0]: argument[1]}, may_fail=True)
        ticket = re.search(r"ESC-\d+", call("escalate", {"reason": f"{tool} failed twice ({SERVICE_UNAVAILABLE})"}))
        reply = (f"I'm sorry: our systems are not responding right now, so I have escalated your case to a human "
                 f"colleague (ticket {ticket.group()}), who will follow up by email within one business day.")
    elif kind == "nonexistent_order":
        lookup(meta["order_id"])
        reply = (f"I couldn't find an order {meta['order_id']} in our system, so there is nothing I can refund. "
                 "Could you check the order number in your confirmation email?")
    elif kind == "already_refunded":
        refund = lookup(meta["order_id"])["refund"]
        reply = (f"Order {meta['order_id']} ({meta['item']}) was already refunded "
                 f"{money(round(refund['amount'] * 100))}, and an order can be refunded only once. The refund reaches "
                 "your original payment method within 5-7 business days.")
    else:
        note = ""  # by_name: the line naming the matching order, written before the refund call
        if kind == "by_name":
            match = next(c for c in json.loads(call("find_customer", {"name": meta["customer_name"]}))
                         if c["name"] == meta["customer_name"])
            orders = json.loads(call("get_customer", {"customer_id": match["customer_id"]}))["orders"]
            order = {**next(o for o in orders if o["item"] == meta["item"]), "customer_id": match["customer_id"]}
            note = matching_note(orders, order) + "\n"
        else:
            order = lookup(meta["order_id"])
        cents = meta["amount_cents"]
        if kind == "handoff":
            summary = f"Refund {money(cents)} on {order['order_id']} ({order['item']}) to {order['customer_id']}: " \
                      f"{meta['reason']}."
            call("handoff", {"agent": "billing", "summary": summary})
        call("issue_refund", {"order_id": order["order_id"], "customer_id": order["customer_id"],
                              "amount": cents / 100, "reason": meta["reason"]}, note=note)
        reply = (f"Done: I refunded {money(cents)} for order {order['order_id']} ({order['item']}). It reaches your "
                 "original payment method within 5-7 business days.")
    return [*steps, {"role": "assistant", "content": reply}]


def matching_note(orders: list[dict], order: dict) -> str:
    """The line the expert writes before refunding a by-name order: each order as ``item: id, total``, then
    ``order`` (the one whose item the customer named, with the ``customer_id`` the refund needs). A 135M policy
    trained without it refunds the last order listed (docs/envs/support_desk.md, stop 27); with it, picking the
    order is copying what follows the item's second mention, and the call copies its three ids and amount from the
    sentence just before it.

    >>> lamp, kettle = {"order_id": "ORD-1", "item": "lamp", "total": 20.0}, {"order_id": "ORD-2", "item": "kettle",
    ...                                                                   "total": 35.5}
    >>> matching_note([lamp, kettle], {**lamp, "customer_id": "CUS-7"})
    'Orders: lamp: ORD-1, 20.0; kettle: ORD-2, 35.5. The lamp is ORD-1, 20.0; customer CUS-7.'
    """
    listed = "; ".join(f"{o['item']}: {o['order_id']}, {o['total']}" for o in orders)
    return (f"Orders: {listed}. The {order['item']} is {order['order_id']}, {order['total']}; "
            f"customer {order['customer_id']}.")


def transcript(task: Task) -> str:
    """The scripted expert's episode played through a fresh env, as text: each assistant line is marked with the
    agent playing it, every tool line is the env's observation, and a hand-off shows the new agent's system prompt.
    """
    env = SupportDeskEnv()
    messages, tools = env.reset(task)
    lines = [f"system ({env.agent_id}; tools: {', '.join(t.name for t in tools)}): {messages[0]['content']}",
             f"user: {messages[-1]['content']}"]
    for message in scripted_expert(task):
        if message["role"] != "assistant":
            continue  # the env's own observation is shown instead of the expert's copy
        lines.append(f"[{env.agent_id}] assistant: {message['content']}")
        calls, _ = parse_tool_calls(message["content"])
        step = env.step(calls[0] if calls else message["content"])
        if not calls:
            lines.append(f"(reward {step.reward}; {json.dumps(step.info)})")
            continue
        lines.append(f"tool: {step.observation}")
        for extra in step.info.get("messages", []):
            names = ", ".join(t["function"]["name"] for t in extra.get("tools", []))
            lines.append(f"system ({step.info['agent_id']}; tools: {names}): {extra['content']}")
    return "\n".join(lines)


if __name__ == "__main__":  # sample transcripts, one per kind: python -m envs.support_tasks
    shown: set[str] = set()
    for t in generate_tasks(60, seed=0):
        kind = t.meta_value()["kind"]
        if kind not in shown:
            shown.add(kind)
            print(f"## {kind} ({t.task_id}; answer {t.answer})\n{transcript(t)}\n")
