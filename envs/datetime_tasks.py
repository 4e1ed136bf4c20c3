"""Datetime tasks and their scripted expert: seeded, split without leaks, ground truth from the world's clock.

Eight kinds. Four need no clock: ``add`` (45 days after 2025-03-14), ``diff`` (days from A to B), ``weekday``,
and one needs it honestly: ``until`` (days until the next Christmas). Four state a wrong or stale "today" in the
prompt ("Today is 2024-01-01.", "As of last year's data, ..."): ``stale_add``, ``stale_until``, ``stale_weekday``,
``stale_since``. Their ground truth uses ``meta.now``, the clock the ``now`` tool reads, and the generator only
keeps a stale task when the user's date would give a different answer, so trusting the prompt is always wrong.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, timedelta, timezone

from envs.answer_env import expert_transcript
from envs.datetime_env import (
    DATE_ADD_TOOL,
    DATE_DIFF_TOOL,
    MONTHS,
    DateTimeEnv,
    NOW_TOOL,
    WEEKDAY_TOOL,
    WEEKDAYS,
    date_add,
    date_diff,
    now,
    task_clock,
    weekday,
)
from envs.tasks import Task

__all__ = ["KINDS", "SPLITS", "HOLIDAYS", "generate_tasks", "scripted_expert", "transcript"]

# kind -> difficulty: 1 = one tool call on dates given in the prompt, 2 = needs the clock, 3 = needs the clock
# against a wrong date in the prompt.
KINDS = {"add": 1, "diff": 1, "weekday": 1, "until": 2, "stale_add": 3, "stale_until": 3, "stale_weekday": 3,
         "stale_since": 3}

# Each task belongs to exactly one split by a hash of its key, so held-out tasks are never trained on, whatever the
# seeds. The key of a clock task is its world's date alone: a test "today" is never a train "today".
SPLITS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}

HOLIDAYS = (("New Year's Day", 1, 1), ("Valentine's Day", 2, 14), ("April Fools' Day", 4, 1),
            ("Independence Day", 7, 4), ("Halloween", 10, 31), ("Christmas", 12, 25), ("New Year's Eve", 12, 31))

_DATES_FROM, _DATES_SPAN = date(1990, 1, 1), (date(2035, 12, 31) - date(1990, 1, 1)).days  # dates in questions
_CLOCK_FROM, _CLOCK_SPAN = date(2024, 1, 1), (date(2027, 12, 31) - date(2024, 1, 1)).days  # the world's "today"
_UTC = timezone.utc
_TRIES = 1000  # draws per task before giving up: a split keeps 10% of keys or more, so a few dozen suffice

_ADD = ["What date is {n} days after {d}?", "What is the date {n} days after {d}?",
        "A package shipped on {d} takes {n} days to arrive. On what date does it arrive?"]
_ADD_WEEKS = ["What date is {w} weeks after {d}?", "What is the date {w} weeks after {d}?"]
_SUBTRACT = ["What date was {n} days before {d}?", "What is the date {n} days before {d}?"]
_DIFF = ["How many days are there from {a} to {b}?", "How many days is it from {a} until {b}?",
         "How many days after {a} is {b}?", "A loan runs from {a} to {b}. How many days is that?"]
_WEEKDAY = ["What day of the week is {d}?", "On which weekday does {d} fall?", "What weekday is {d}?"]
_UNTIL = ["How many days are left until the next {h} ({md})?", "How many days from today until {h} ({md})?",
          "Starting from today, how many days until the next {h} ({md})?"]
_STATED = ["Today is {s}.", "It's {s} today.", "My calendar says today is {s}.", "I believe today is {s}."]
_STALE = ["As of last year's data, today is {s}.", "According to last year's planner, today's date is {s}.",
          "My notes from last year say it is {s}."]
_STALE_ADD = ["What date will it be {n} days from today?", "What is the date {n} days from now?"]
_STALE_ADD_WEEKS = ["What date will it be {w} weeks from today?"]
_STALE_WEEKDAY = ["What day of the week is it today?", "Which weekday is it today?"]
_STALE_WEEKDAY_LATER = ["What day of the week will it be {n} days from today?"]
_STALE_SINCE = ["How many days have passed since {p}?", "How many days ago was {p}?"]


# ---- task generation ----


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct datetime tasks, the same for the same (n, seed, split); splits never share a task key.

    The kind is drawn first and then its fields until they fall in ``split``, so every split has the same mix.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rng = random.Random(f"datetime:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    days = [d for d in range(_CLOCK_SPAN + 1) if _split_of(_clock_key(_CLOCK_FROM + timedelta(d))) == split]
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(n):
        kind = rng.choice(list(KINDS))
        for _ in range(_TRIES):
            clock = _clock(rng, days)
            sampled = _SAMPLERS[kind](rng, clock.date())
            if sampled is None:  # a stale task whose stated date gives the same answer: it would test nothing
                continue
            prompt, params, answer = sampled
            identity = _key(kind, params) + (_clock_key(clock.date()) if KINDS[kind] > 1 else "")
            if identity not in seen and (KINDS[kind] > 1 or _split_of(_key(kind, params)) == split):
                break
        else:
            raise ValueError(f"could only generate {len(tasks)} distinct {split} tasks of {n} requested")
        seen.add(identity)
        meta = {"split": split, "difficulty": KINDS[kind], "kind": kind, "now": clock.isoformat(), **params}
        tasks.append(Task(task_id=f"datetime-{split}-{seed}-{len(tasks)}", env="datetime", prompt=prompt,
                          answer=json.dumps(answer), meta=json.dumps(meta)))
    return tasks


def _clock_key(day: date) -> str:
    return f"clock:{day.isoformat()}"


def _key(kind: str, params: dict) -> str:
    return json.dumps([kind, params], sort_keys=True)


def _split_of(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _clock(rng: random.Random, days: list[int]) -> datetime:
    """A world clock on one of ``days`` (offsets from 2024-01-01 in the split), at a random UTC minute."""
    day = _CLOCK_FROM + timedelta(days=rng.choice(days))
    return datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60), tzinfo=_UTC)


def _date(rng: random.Random) -> date:
    if rng.random() < 0.15:  # around the end of February, so leap years come up often
        return date(rng.randint(1990, 2035), 2, 26) + timedelta(days=rng.randint(0, 4))
    return _DATES_FROM + timedelta(days=rng.randint(0, _DATES_SPAN))


def _written(d: date, rng: random.Random) -> str:
    """A date as a user writes it: ISO, "March 14, 2025" or "14 March 2025" (the tools want ISO)."""
    style = rng.randrange(3)
    if style == 0:
        return d.isoformat()
    month = MONTHS[d.month - 1]
    return f"{month} {d.day}, {d.year}" if style == 1 else f"{d.day} {month} {d.year}"


def _offset(rng: random.Random, weeks: list[str], days: list[str]) -> tuple[str, dict, int]:
    """A template (fields ``{w}`` or ``{n}``), the offset it asks for ({"weeks": w} a third of the time, else
    {"days": n}) and that offset in days."""
    if rng.random() < 1 / 3:
        w = rng.randint(1, 52)
        return rng.choice(weeks), {"weeks": w}, 7 * w
    n = rng.randint(1, 400)
    return rng.choice(days), {"days": n}, n


def _next(today: date, month: int, day: int) -> date:
    """The first ``month``/``day`` after ``today`` (the fixed-date holidays exist every year)."""
    this_year = date(today.year, month, day)
    return this_year if this_year > today else date(today.year + 1, month, day)


def _add(rng, today):
    d = _date(rng)
    if rng.random() < 0.2:
        n = rng.randint(1, 400)
        prompt = rng.choice(_SUBTRACT).format(n=n, d=_written(d, rng))
        return prompt, {"date": d.isoformat(), "days": -n}, (d - timedelta(days=n)).isoformat()
    template, offset, days = _offset(rng, _ADD_WEEKS, _ADD)
    prompt = template.format(d=_written(d, rng), n=offset.get("days"), w=offset.get("weeks"))
    return prompt, {"date": d.isoformat(), **offset}, (d + timedelta(days)).isoformat()


def _diff(rng, today):
    a = _date(rng)
    b = a + timedelta(days=rng.randint(1, 1500))
    prompt = rng.choice(_DIFF).format(a=_written(a, rng), b=_written(b, rng))
    return prompt, {"start": a.isoformat(), "end": b.isoformat()}, (b - a).days


def _weekday(rng, today):
    d = _date(rng)
    return rng.choice(_WEEKDAY).format(d=_written(d, rng)), {"date": d.isoformat()}, WEEKDAYS[d.weekday()]


def _holiday(rng, today) -> tuple[str, str, date]:
    name, month, day = rng.choice(HOLIDAYS)
    return name, f"{MONTHS[month - 1]} {day}", _next(today, month, day)


def _until(rng, today):
    name, md, target = _holiday(rng, today)
    prompt = rng.choice(_UNTIL).format(h=name, md=md)
    return prompt, {"holiday": name, "target": target.isoformat()}, (target - today).days


def _stated(rng: random.Random, today: date) -> tuple[str, date]:
    """A wrong "today" and the sentence that states it: a year stale, a few days to years stale, or ahead."""
    if rng.random() < 0.4:
        s = today - timedelta(days=365 + rng.randint(-20, 20))
        return rng.choice(_STALE).format(s=_written(s, rng)), s
    ahead = rng.random() < 0.15
    s = today + timedelta(days=rng.randint(2, 400)) if ahead else today - timedelta(days=rng.randint(2, 900))
    return rng.choice(_STATED).format(s=_written(s, rng)), s


def _stale_add(rng, today):
    sentence, s = _stated(rng, today)
    template, offset, days = _offset(rng, _STALE_ADD_WEEKS, _STALE_ADD)
    answer = (today + timedelta(days)).isoformat()
    question = template.format(n=offset.get("days"), w=offset.get("weeks"))
    return f"{sentence} {question}", {"stated_today": s.isoformat(), **offset}, answer


def _stale_until(rng, today):
    sentence, s = _stated(rng, today)
    name, md, target = _holiday(rng, today)
    month, day = target.month, target.day
    if (_next(s, month, day) - s).days == (target - today).days:
        return None
    prompt = f"{sentence} {rng.choice(_UNTIL).format(h=name, md=md)}"
    return prompt, {"stated_today": s.isoformat(), "holiday": name, "target": target.isoformat()}, (target - today).days


def _stale_weekday(rng, today):
    sentence, s = _stated(rng, today)
    if (today - s).days % 7 == 0:
        return None
    n = 0 if rng.random() < 0.5 else rng.randint(1, 30)
    question = rng.choice(_STALE_WEEKDAY) if n == 0 else rng.choice(_STALE_WEEKDAY_LATER).format(n=n)
    later = today + timedelta(days=n)
    return f"{sentence} {question}", {"stated_today": s.isoformat(), "days": n}, WEEKDAYS[later.weekday()]


def _stale_since(rng, today):
    sentence, s = _stated(rng, today)
    p = min(s, today) - timedelta(days=rng.randint(1, 900))
    prompt = f"{sentence} {rng.choice(_STALE_SINCE).format(p=_written(p, rng))}"
    return prompt, {"stated_today": s.isoformat(), "since": p.isoformat()}, (today - p).days


_SAMPLERS = {"add": _add, "diff": _diff, "weekday": _weekday, "until": _until, "stale_add": _stale_add,
             "stale_until": _stale_until, "stale_weekday": _stale_weekday, "stale_since": _stale_since}


# ---- the scripted expert ----


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert adds after the prompt: the tool calls (``now`` first when the question is about
    today), their results, then the answer sentence (for SFT). The results come from the tools themselves.
    """
    meta = task.meta_value()
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"task {task.task_id!r} has meta.kind {kind!r}, not one of {', '.join(KINDS)}: "
                         "scripted_expert needs it (and that kind's fields) to call the tools")
    clock = task_clock(task)
    steps: list[dict] = []

    def call(name: str, arguments: dict) -> str:
        result = now(clock, **arguments) if name == NOW_TOOL.name else _TOOL_FNS[name](**arguments)
        text = json.dumps({"name": name, "arguments": arguments})
        steps.extend([{"role": "assistant", "content": f"<tool_call>\n{text}\n</tool_call>"},
                      {"role": "tool", "name": name, "content": result}])
        return result

    today = call(NOW_TOOL.name, {"timezone": "UTC"})[:10] if KINDS[kind] > 1 else ""
    s = meta.get("stated_today")
    offset = {k: meta[k] for k in ("days", "weeks") if k in meta}
    if kind == "add":
        result = call(DATE_ADD_TOOL.name, {"date": meta["date"], **offset})[:10]
        answer = f"{_phrase(offset)} {meta['date']} is {result}."
    elif kind == "diff":
        days = call(DATE_DIFF_TOOL.name, {"start": meta["start"], "end": meta["end"]})
        answer = f"From {meta['start']} to {meta['end']} is {days}."
    elif kind == "weekday":
        answer = f"{meta['date']} is a {call(WEEKDAY_TOOL.name, {'date': meta['date']})}."
    elif kind in ("until", "stale_until"):
        days = call(DATE_DIFF_TOOL.name, {"start": today, "end": meta["target"]})
        not_s = f", not {s}" if s else ""
        answer = f"Today is {today}{not_s}. The next {meta['holiday']} is on {meta['target']}, {days} away."
    elif kind == "stale_add":
        result = call(DATE_ADD_TOOL.name, {"date": today, **offset})[:10]
        answer = f"The current date is {today}, not {s}, so {_phrase(offset, 'from today')} is {result}."
    elif kind == "stale_weekday" and meta["days"] == 0:
        name = WEEKDAYS[date.fromisoformat(today).weekday()]
        answer = f"The current date is {today}, not {s}, so today is a {name}."
    elif kind == "stale_weekday":
        later, name = call(DATE_ADD_TOOL.name, {"date": today, "days": meta["days"]}).split(" ", 1)
        answer = f"Today is {today}, not {s}, so {meta['days']} days from today is {later}, a {name.strip('()')}."
    else:  # stale_since
        days = call(DATE_DIFF_TOOL.name, {"start": meta["since"], "end": today})
        answer = f"Today is {today}, not {s}, so {days} have passed since {meta['since']}."
    return [*steps, {"role": "assistant", "content": answer}]


_TOOL_FNS = {DATE_ADD_TOOL.name: date_add, DATE_DIFF_TOOL.name: date_diff, WEEKDAY_TOOL.name: weekday}


def _phrase(offset: dict, where: str = "after") -> str:
    """ "45 days after", "3 weeks after", "30 days before" (a negative offset), or with ``where`` "from today"."""
    unit, n = next(iter(offset.items()))
    if n < 0:
        return f"{-n} {unit} before"
    return f"{n} {unit} {where}"


def transcript(task: Task) -> str:
    """The scripted expert's episode played through a fresh env, as text; every tool line is the env's observation.

    >>> print(transcript(Task("t", "datetime", "What weekday is 2024-02-29?", '"Thursday"',
    ...                       '{"kind": "weekday", "date": "2024-02-29"}')))
    user: What weekday is 2024-02-29?
    assistant: <tool_call>
    {"name": "weekday", "arguments": {"date": "2024-02-29"}}
    </tool_call>
    tool: Thursday
    assistant: 2024-02-29 is a Thursday.
    (reward 1.0)
    """
    return expert_transcript(DateTimeEnv(), task, scripted_expert(task))


if __name__ == "__main__":  # sample transcripts, one per kind: python -m envs.datetime_tasks
    shown: set[str] = set()
    for t in generate_tasks(60, seed=0):
        kind = t.meta_value()["kind"]
        if kind not in shown:
            shown.add(kind)
            print(f"## {kind} ({t.task_id}; meta.now {t.meta_value()['now']}; answer {t.answer})\n{transcript(t)}\n")
