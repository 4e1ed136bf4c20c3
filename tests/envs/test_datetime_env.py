"""The datetime env: tools against hand-computed dates, error observations, tasks (splits, stale "today"s), verifier,
and the scripted expert played through the env."""

from __future__ import annotations

import doctest
import json
from datetime import date, datetime, timedelta, timezone

import pytest

import envs
from envs import datetime_env, datetime_tasks
from envs.datetime_env import DateTimeEnv, date_add, date_diff, find_dates, now, verify, weekday
from envs.datetime_tasks import KINDS, generate_tasks, scripted_expert
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

pytestmark = pytest.mark.timeout(60)

CLOCK = "2025-06-03T22:30:00+00:00"  # a Tuesday, late enough that +02:00 is already Wednesday


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(name, arguments, raw="", strict=True)


def task(answer, meta: dict | None = None) -> Task:
    meta = {"now": CLOCK} if meta is None else meta
    return Task("t", "datetime", "What date is 45 days after 2025-03-14?", json.dumps(answer), json.dumps(meta))


def started(meta: dict | None = None) -> DateTimeEnv:
    env = DateTimeEnv()
    env.reset(task("2025-04-28", meta))
    return env


# ---- tools: results computed by hand ----


@pytest.mark.parametrize(
    ("start", "offset", "expected"),
    [
        ("2025-03-14", {"days": 45}, "2025-04-28 (Monday)"),  # 17 days left in March + 28; 45 = 6 weeks + 3
        ("2024-02-28", {"days": 1}, "2024-02-29 (Thursday)"),  # leap year
        ("2023-02-28", {"days": 1}, "2023-03-01 (Wednesday)"),  # not a leap year
        ("2000-02-28", {"days": 1}, "2000-02-29 (Tuesday)"),  # divisible by 400: leap
        ("1900-02-28", {"days": 1}, "1900-03-01 (Thursday)"),  # divisible by 100 only: not leap
        ("2024-12-31", {"days": 1}, "2025-01-01 (Wednesday)"),  # year end
        ("2025-01-31", {"weeks": 4}, "2025-02-28 (Friday)"),  # month end, weeks
        ("2024-03-01", {"days": -1}, "2024-02-29 (Thursday)"),  # backwards over a leap day
        ("2025-03-14", {"weeks": 2, "days": 3}, "2025-03-31 (Monday)"),
        ("2025-06-03T14:25:00+00:00 (Tuesday)", {"days": 0}, "2025-06-03 (Tuesday)"),  # now's output as input
    ],
)
def test_date_add(start, offset, expected):
    assert date_add(start, **offset) == expected
    assert started().step(call("date_add", date=start, **offset)).observation == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2024-01-01", "2025-01-01", "366 days"),
        ("2025-01-01", "2026-01-01", "365 days"),
        ("2024-02-01", "2024-03-01", "29 days"),
        ("2023-02-01", "2023-03-01", "28 days"),
        ("1999-12-31", "2000-03-01", "61 days"),  # 1 + 31 + 29
        ("2025-03-14", "2025-04-28", "45 days"),
        ("2025-04-28", "2025-03-14", "-45 days"),
        ("2025-03-14", "2025-03-15", "1 day"),
        ("2025-03-14", "2025-03-14", "0 days"),
    ],
)
def test_date_diff(start, end, expected):
    assert date_diff(start, end) == expected
    assert started().step(call("date_diff", start=start, end=end)).observation == expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [("2024-02-29", "Thursday"), ("2000-01-01", "Saturday"), ("1969-07-20", "Sunday"), ("2025-12-25", "Thursday")],
)
def test_weekday(day, expected):
    assert weekday(day) == expected


def test_now_reads_the_task_clock_and_replays_exactly():
    env = started()
    assert env.step(call("now")).observation == "2025-06-03T22:30:00+00:00 (Tuesday)"
    assert env.step(call("now", timezone="UTC")).observation == "2025-06-03T22:30:00+00:00 (Tuesday)"
    assert env.step(call("now", timezone="+02:00")).observation == "2025-06-04T00:30:00+02:00 (Wednesday)"
    assert env.step(call("now", timezone="-05:00")).observation == "2025-06-03T17:30:00-05:00 (Tuesday)"
    naive = started({"now": "2027-01-01T08:00:00"})  # no offset: UTC
    assert naive.step(call("now")).observation == "2027-01-01T08:00:00+00:00 (Friday)"
    clock = datetime(2025, 6, 3, 22, 30, tzinfo=timezone.utc)
    assert now(clock) == now(clock) == "2025-06-03T22:30:00+00:00 (Tuesday)"


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("date_add", {"date": "2025-02-29", "days": 1}, "February 2025 has 28 days (2025 is not a leap year)"),
        ("date_add", {"date": "2025-04-31", "days": 1}, "April 2025 has 30 days"),
        ("date_add", {"date": "March 14, 2025", "days": 1}, "expected YYYY-MM-DD; write it as 2025-03-14"),
        ("date_add", {"date": "14/03/2025", "days": 1}, "expected YYYY-MM-DD; write dates as YYYY-MM-DD, e.g."),
        ("date_add", {"date": "2025-03-14"}, 'nothing to add: give "days" and/or "weeks"'),
        ("date_add", {"date": "9999-12-31", "days": 1}, "falls outside the years 1-9999; use a smaller offset"),
        ("date_add", {"date": "2025-03-14", "days": 10**8}, "too large (at most 3,650,000 in absolute value)"),
        ("date_add", {"date": "2025-03-14", "days": "45"}, "'days' must be an integer, got string"),
        ("date_diff", {"start": "2025-13-01", "end": "2025-03-14"}, "for 'start': the month must be 01-12"),
        ("date_diff", {"start": "2025-03-14", "end": "0000-01-01"}, "for 'end': the year must be 1-9999"),
        ("weekday", {}, "missing required 'date'"),
        ("weekday", {"date": "2023-02-29"}, "2023 is not a leap year"),
        ("now", {"timezone": "Europe/Paris"}, "give 'UTC' or an offset from UTC such as '+02:00'"),
        ("now", {"timezone": "+15:00"}, "offsets run from -12:00 to +14:00"),
        ("clock", {}, "unknown tool 'clock'; available: date_add, date_diff, now, weekday"),
    ],
)
def test_bad_inputs_are_error_observations_with_the_fix(name, arguments, message):
    step = started().step(call(name, **arguments))
    assert step.observation.startswith("error: ") and message in step.observation, step.observation
    assert step.info["ok"] is False and not step.done and step.reward == 0.0


def test_a_task_without_clock_and_a_bad_clock():
    step = started({}).step(call("now"))
    assert step.observation.startswith("error: this episode has no clock") and step.info["ok"] is False
    with pytest.raises(ValueError, match=r"meta.now 'yesterday' is not an ISO 8601 datetime\. Fix: set it like"):
        DateTimeEnv().reset(task("2025-04-28", {"now": "yesterday"}))


def test_env_reset_and_step():
    env = DateTimeEnv()
    t = task("2025-04-28")
    messages, tools = env.reset(t)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == t.prompt
    assert "call the now tool" in messages[0]["content"]
    assert [tool.name for tool in tools] == ["now", "date_add", "date_diff", "weekday"]
    assert tools[1].schema()["function"]["parameters"]["required"] == ["date"]
    final = env.step("45 days after 2025-03-14 is April 28, 2025.")
    assert (final.observation, final.reward, final.done, final.info) == (None, 1.0, True, {"correct": True})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")
    env.reset(t)
    assert env.step("2025-04-29").reward == 0.0


def test_doctests():
    for module in (datetime_env, datetime_tasks):
        result = doctest.testmod(module)  # a failure's details are in the captured stdout
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---- verifier ----


@pytest.mark.parametrize(
    ("answer", "text", "ok"),
    [
        ("2025-04-28", "2025-04-28", True),
        ("2025-04-28", "45 days after 2025-03-14 is April 28, 2025.", True),
        ("2025-04-28", "It arrives on 28 April 2025.", True),
        ("2025-04-28", "It is the 28th of April, 2025", True),
        ("2025-04-28", "Apr. 28th 2025", True),
        ("2025-04-28", r"so \boxed{2025/04/28}", True),
        ("2025-04-28", "2025-04-28 (Monday)", True),  # date_add's own output: the call counts as correct
        ("2025-04-28", "2025-04-29", False),
        ("2025-04-28", "2025-04-28 or maybe 2025-04-29", False),  # the last date counts
        ("2025-04-28", "April 28", False),  # no year
        ("2025-04-28", "Monday", False),
        ("Thursday", "2024-02-29 was a Thursday.", True),
        ("Thursday", "thursday", True),
        ("Thursday", "Thu.", True),
        ("Thursday", "Thursday (2024-02-29)", True),
        ("Thursday", "It is Thursday, no, Friday", False),
        ("Thursday", "2024-02-29", False),  # a date is not a weekday name
        (205, "Today is 2025-06-03, so Christmas (2025-12-25) is 205 days away.", True),
        (205, "205 days until Christmas (December 25).", True),  # the day of a date is not the count
        (205, "205 days", True),
        (1234, "1,234 days", True),
        (205, "204 days", False),
        (205, "2025-06-03T14:25:00+00:00 (Tuesday)", False),  # now's output holds no count
        (205, "about 205.5 days", False),
        (205, "no idea", False),
    ],
)
def test_verify(answer, text, ok):
    assert verify(task(answer), text) is ok


def test_verify_rejects_unusable_ground_truth():
    assert not verify(Task("t", "datetime", "q", "not json"), "2025-04-28")
    assert not verify(task(True), "true") and not verify(task("soon"), "soon") and not verify(task([1]), "1")
    assert not verify(task("2025-04-28"), None)


def test_find_dates():
    assert find_dates("2025-03-14 to March 20th, 2025, 1 April 2025, 2025-02-30, May 5") == [
        date(2025, 3, 14), date(2025, 3, 20), date(2025, 4, 1)]


# ---- tasks ----


def test_generate_tasks_is_deterministic_and_covers_every_kind():
    tasks = generate_tasks(200, seed=7)
    assert tasks == generate_tasks(200, seed=7)
    assert tasks != generate_tasks(200, seed=8)
    assert len({t.task_id for t in tasks}) == 200 and tasks[3].task_id == "datetime-train-7-3"
    assert len({(t.prompt, t.meta_value()["now"]) for t in tasks}) == 200  # "until" prompts recur on other days
    assert {t.meta_value()["kind"] for t in tasks} == set(KINDS)
    for t in tasks:
        meta = t.meta_value()
        assert meta["split"] == "train" and meta["difficulty"] == KINDS[meta["kind"]] and t.env == "datetime"
        datetime.fromisoformat(meta["now"])


def test_answers_match_an_independent_computation():
    for t in generate_tasks(300, seed=1):
        meta, answer = t.meta_value(), t.answer_value()
        today = datetime.fromisoformat(meta["now"]).date()
        kind = meta["kind"]
        if kind in ("add", "stale_add"):
            start = date.fromisoformat(meta["date"]) if kind == "add" else today
            expected = (start + timedelta(days=meta.get("days", 0) + 7 * meta.get("weeks", 0))).isoformat()
        elif kind == "diff":
            expected = (date.fromisoformat(meta["end"]) - date.fromisoformat(meta["start"])).days
        elif kind == "weekday":
            expected = date.fromisoformat(meta["date"]).strftime("%A")
        elif kind in ("until", "stale_until"):
            target = date.fromisoformat(meta["target"])
            assert today < target and (target - today).days <= 366  # the next one, not a later one
            expected = (target - today).days
        elif kind == "stale_weekday":
            expected = (today + timedelta(days=meta["days"])).strftime("%A")
        else:
            expected = (today - date.fromisoformat(meta["since"])).days
        assert answer == expected, t


def _if_stated_were_true(meta: dict):
    """The answer a model would give trusting the user's "today"."""
    s = date.fromisoformat(meta["stated_today"])
    kind = meta["kind"]
    if kind == "stale_add":
        return (s + timedelta(days=meta.get("days", 0) + 7 * meta.get("weeks", 0))).isoformat()
    if kind == "stale_weekday":
        return (s + timedelta(days=meta["days"])).strftime("%A")
    if kind == "stale_since":
        return (s - date.fromisoformat(meta["since"])).days
    target = date.fromisoformat(meta["target"])
    nxt = target.replace(year=s.year)
    return ((nxt if nxt > s else nxt.replace(year=s.year + 1)) - s).days


def test_stale_today_tasks_need_the_clock():
    stale = [t for t in generate_tasks(300, seed=2) if t.meta_value()["kind"].startswith("stale_")]
    assert len(stale) > 100
    for t in stale:
        meta = t.meta_value()
        stated = date.fromisoformat(meta["stated_today"])
        assert stated != datetime.fromisoformat(meta["now"]).date()
        assert stated in find_dates(t.prompt), t.prompt  # the prompt states it (in some format)
        wrong = _if_stated_were_true(meta)
        assert wrong != t.answer_value(), t
        assert not verify(t, f"The answer is {wrong}.")
    assert any("last year" in t.prompt for t in stale) and any(t.prompt.startswith("Today is") for t in stale)


def test_splits_never_share_tasks_or_clock_days():
    by_split = {split: generate_tasks(300, seed=0, split=split) for split in ("train", "val", "test")}
    keys, days, prompts = {}, {}, {}
    for split, tasks in by_split.items():
        metas = [t.meta_value() for t in tasks]
        keys[split] = {json.dumps([m["kind"], {k: v for k, v in m.items() if k not in ("split", "difficulty", "kind",
                                                                                        "now")}], sort_keys=True)
                       for m in metas if KINDS[m["kind"]] == 1}
        days[split] = {m["now"][:10] for m in metas}
        prompts[split] = {t.prompt for t in tasks if KINDS[t.meta_value()["kind"]] == 1}  # clock tasks: by day
        assert {m["split"] for m in metas} == {split}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not keys[a] & keys[b] and not days[a] & days[b] and not prompts[a] & prompts[b], (a, b)
    with pytest.raises(ValueError, match="unknown split 'dev'; known: train, val, test"):
        generate_tasks(1, seed=0, split="dev")


# ---- the scripted expert ----


@pytest.mark.parametrize("split", ["train", "test"])
def test_scripted_expert_through_the_env_is_accepted(split):
    for t in generate_tasks(50, seed=5, split=split):
        env = DateTimeEnv()
        env.reset(t)
        steps = scripted_expert(t)
        *tool_steps, final = steps
        results = []
        for assistant, tool in zip(tool_steps[::2], tool_steps[1::2]):
            calls, errors = parse_tool_calls(assistant["content"])
            assert errors == [] and len(calls) == 1 and calls[0].strict, assistant
            text = assistant["content"]
            assert text.startswith("<tool_call>\n{") and text.endswith("}\n</tool_call>")
            step = env.step(calls[0])
            assert step.info["ok"] and step.observation == tool["content"] and tool["role"] == "tool"
            results.append(step.observation)
        if KINDS[t.meta_value()["kind"]] > 1:
            assert parse_tool_calls(tool_steps[0]["content"])[0][0].name == "now"  # the clock first
        assert verify(t, results[-1])  # the last call's result answers the task: tool shaping counts it correct
        assert final["role"] == "assistant" and env.step(final["content"]).reward == 1.0, (t.prompt, final)


def test_scripted_expert_needs_the_kind():
    with pytest.raises(ValueError, match="has meta.kind None, not one of add, diff"):
        scripted_expert(task("2025-04-28"))


def test_sft_expert_demos_work_for_datetime(monkeypatch):
    """The lines the integrator adds (ENVS, EXPERTS) are enough for SFT, recovery demos included."""
    from learners import sft_data

    monkeypatch.setitem(envs.ENVS, "datetime", DateTimeEnv)
    monkeypatch.setitem(sft_data.EXPERTS, "datetime", (generate_tasks, scripted_expert))
    demos = sft_data.expert_demos("datetime", 40, 0, recovery_fraction=1.0)
    assert len(demos) == 40
    for demo in demos:
        assert demo[2]["weight"] == 0 and demo[3]["content"].startswith("error: ")  # every demo opens with a mistake
        assert demo[0]["tools"][0]["function"]["name"] == "now"
