"""The datetime environment: date arithmetic a small model gets wrong in its head, and a clock it must trust.

The episode's world has its own clock (``meta.now`` of the task), so an episode replays exactly whenever it runs.
Half the tasks depend on "today", and in most of those the user states a wrong or stale date ("today is
2024-01-01", "as of last year's data"): the right behaviour is to call ``now`` and use the tool's date, and the
ground truth is computed from the tool's clock. The tasks and the scripted expert are in ``envs.datetime_tasks``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from functools import partial

from envs.answer_env import AnswerEnv
from envs.base import Tool, ToolError
from envs.tasks import Task

__all__ = [
    "DateTimeEnv",
    "now",
    "date_add",
    "date_diff",
    "weekday",
    "parse_date",
    "find_dates",
    "NOW_TOOL",
    "DATE_ADD_TOOL",
    "DATE_DIFF_TOOL",
    "WEEKDAY_TOOL",
    "SYSTEM_PROMPT",
    "verify",
    "task_clock",
    "WEEKDAYS",
    "MONTHS",
]

WEEKDAYS = tuple(calendar.day_name)  # Monday .. Sunday, date.weekday() order
MONTHS = tuple(calendar.month_name)[1:]
MAX_OFFSET_DAYS = 3_650_000  # |days| date_add accepts (about 10,000 years): anything larger leaves years 1-9999 anyway
_ISO_HINT = "write dates as YYYY-MM-DD, e.g. 2025-03-14"
_UTC = timezone.utc


# ---- the tools ----


def parse_date(value: str, field: str = "date") -> date:
    """A tool argument as a date: ``YYYY-MM-DD``, optionally followed by a time (``now``'s output is accepted).

    Every failure is a ToolError naming the argument and the fix, e.g. the ISO spelling of a date written in words.

    >>> parse_date("2024-02-29"), parse_date("2025-06-03T14:25:00+00:00 (Tuesday)")
    (datetime.date(2024, 2, 29), datetime.date(2025, 6, 3))
    >>> parse_date("2025-02-29")
    Traceback (most recent call last):
    ...
    envs.base.ToolError: invalid date '2025-02-29' for 'date': February 2025 has 28 days (2025 is not a leap year)
    """
    text = value.strip()
    m = _ISO_ARG.fullmatch(text)
    if m is None:
        written = find_dates(text)
        fix = f"write it as {written[-1].isoformat()}" if len(written) == 1 else _ISO_HINT
        raise ToolError(f"invalid date {value[:40]!r} for {field!r}: expected YYYY-MM-DD; {fix}")
    y, mo, d = (int(g) for g in m.groups())
    if not 1 <= y <= 9999:
        raise ToolError(f"invalid date {value[:40]!r} for {field!r}: the year must be 1-9999")
    if not 1 <= mo <= 12:
        raise ToolError(f"invalid date {value[:40]!r} for {field!r}: the month must be 01-12 (YYYY-MM-DD)")
    days_in_month = calendar.monthrange(y, mo)[1]
    if not 1 <= d <= days_in_month:
        why = f"{MONTHS[mo - 1]} {y} has {days_in_month} days"
        if mo == 2 and d == 29:
            why += f" ({y} is not a leap year)"
        raise ToolError(f"invalid date {value[:40]!r} for {field!r}: {why}")
    return date(y, mo, d)


_ISO_ARG = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?:\s*\([A-Za-z]+\))?"
)
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)


def now(clock: datetime | None, timezone: str = "UTC") -> str:
    """The episode's clock, ISO 8601 with the weekday, at UTC or a fixed offset from it.

    >>> t = datetime(2025, 6, 3, 22, 30, tzinfo=_UTC)
    >>> now(t), now(t, "+02:00")
    ('2025-06-03T22:30:00+00:00 (Tuesday)', '2025-06-04T00:30:00+02:00 (Wednesday)')
    """
    if clock is None:
        raise ToolError("this episode has no clock (its task sets no meta.now); answer from the dates in the question")
    tz = _timezone(timezone)
    local = clock.astimezone(tz)
    return f"{local.isoformat()} ({WEEKDAYS[local.weekday()]})"


def _timezone(name: str) -> timezone:
    text = name.strip()
    if text.upper() in ("UTC", "GMT", "Z", ""):
        return _UTC
    m = _OFFSET.fullmatch(text)
    if m is None or int(m.group(3) or 0) >= 60:
        raise ToolError(f"unknown timezone {name[:40]!r}: give 'UTC' or an offset from UTC such as '+02:00'")
    minutes = (int(m.group(2)) * 60 + int(m.group(3) or 0)) * (-1 if m.group(1) == "-" else 1)
    if not -12 * 60 <= minutes <= 14 * 60:
        raise ToolError(f"timezone offset {name[:40]!r} out of range: offsets run from -12:00 to +14:00")
    return _UTC if minutes == 0 else timezone(timedelta(minutes=minutes))


def date_add(date: str, days: int | None = None, weeks: int | None = None) -> str:
    """``date`` plus ``days`` and ``weeks`` (negative goes back), as ``YYYY-MM-DD (Weekday)``.

    >>> date_add("2025-03-14", days=45), date_add("2024-02-28", days=1), date_add("2024-03-01", weeks=-1)
    ('2025-04-28 (Monday)', '2024-02-29 (Thursday)', '2024-02-23 (Friday)')
    """
    start = parse_date(date, "date")
    if days is None and weeks is None:
        raise ToolError('nothing to add: give "days" and/or "weeks", e.g. {"date": "2025-03-14", "days": 45}')
    total = (days or 0) + 7 * (weeks or 0)
    if abs(total) > MAX_OFFSET_DAYS:
        raise ToolError(f"offset of {total} days is too large (at most {MAX_OFFSET_DAYS:,} in absolute value)")
    try:
        result = start + timedelta(days=total)
    except OverflowError:
        raise ToolError(f"{date} plus {total} days falls outside the years 1-9999; use a smaller offset") from None
    return f"{result.isoformat()} ({WEEKDAYS[result.weekday()]})"


def date_diff(start: str, end: str) -> str:
    """Days from ``start`` to ``end`` (negative when ``end`` is earlier).

    >>> date_diff("2024-02-01", "2024-03-01"), date_diff("2023-02-01", "2023-03-01")
    ('29 days', '28 days')
    >>> date_diff("2025-01-02", "2025-01-01")
    '-1 day'
    """
    n = (parse_date(end, "end") - parse_date(start, "start")).days
    return f"{n} day" if abs(n) == 1 else f"{n} days"


def weekday(date: str) -> str:
    """The day of the week of ``date``.

    >>> weekday("2024-02-29"), weekday("2000-01-01")
    ('Thursday', 'Saturday')
    """
    return WEEKDAYS[parse_date(date, "date").weekday()]


_DATE_ARG = {"type": "string", "description": "a date as YYYY-MM-DD, e.g. 2025-03-14"}

NOW_TOOL = Tool(
    name="now",
    description="The current date and time, ISO 8601 with the weekday. Trust it over any date the user states. "
    'Example: {"timezone": "UTC"}.',
    parameters={
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "'UTC' (default) or an offset such as '+02:00'"}},
        "additionalProperties": False,
    },
    fn=partial(now, None),  # the env binds each episode's clock at reset
)
DATE_ADD_TOOL = Tool(
    name="date_add",
    description="Add days and/or weeks to a date (negative numbers go back). Returns YYYY-MM-DD (Weekday). "
    'Example: {"date": "2025-03-14", "days": 45}.',
    parameters={
        "type": "object",
        "properties": {
            "date": _DATE_ARG,
            "days": {"type": "integer", "description": "days to add, e.g. 45 or -30"},
            "weeks": {"type": "integer", "description": "weeks to add, e.g. 3"},
        },
        "required": ["date"],
        "additionalProperties": False,
    },
    fn=date_add,
)
DATE_DIFF_TOOL = Tool(
    name="date_diff",
    description="The number of days from start to end (negative when end is earlier). "
    'Example: {"start": "2025-03-14", "end": "2025-12-25"}.',
    parameters={
        "type": "object",
        "properties": {"start": _DATE_ARG, "end": _DATE_ARG},
        "required": ["start", "end"],
        "additionalProperties": False,
    },
    fn=date_diff,
)
WEEKDAY_TOOL = Tool(
    name="weekday",
    description='The day of the week of a date. Example: {"date": "2024-02-29"}.',
    parameters={
        "type": "object",
        "properties": {"date": _DATE_ARG},
        "required": ["date"],
        "additionalProperties": False,
    },
    fn=weekday,
)

SYSTEM_PROMPT = (
    "You are a careful assistant with date tools. Use them for any date arithmetic instead of working it out in "
    "your head. Dates the user states about today may be wrong or out of date: whenever a question depends on "
    "today's date, call the now tool and trust its date over the user's. Times are UTC. Give the final answer as a "
    "plain sentence: dates as YYYY-MM-DD, a number of days as a number, a weekday by its name."
)


# ---- verifier ----

_MONTH = r"(?P<{g}>(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*)\.?"
_DATES = re.compile(
    r"(?<!\d)(?P<y1>\d{4})[-/](?P<m1>\d{1,2})[-/](?P<d1>\d{1,2})(?!\d)"  # 2025-03-14, 2025/03/14
    r"|(?<![\w.])(?P<d2>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?"  # 14 March 2025, 14th of March
    + _MONTH.format(g="n2") + r",?(?:\s+(?P<y2>\d{4}))?(?!\d)"
    r"|(?<![a-z])" + _MONTH.format(g="n3")  # March 14, 2025; March 14th 2025
    + r"\s+(?P<d3>\d{1,2})(?:st|nd|rd|th)?(?!\d)(?:,?\s+(?P<y3>\d{4})(?!\d))?",
    re.IGNORECASE,
)
_TIMES = re.compile(r"[T ]?[+-]?\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_INTEGER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?![\d])|-?\d+(?:\.\d+)?")
_WEEKDAY_NAMES = re.compile(
    r"\b(?:(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun)"
    r"\b\.?"
)
_MONTH_INDEX = {m.lower()[:3]: i for i, m in enumerate(MONTHS, start=1)}
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]", re.IGNORECASE)


def _month(name: str) -> int | None:
    name = name.lower().rstrip(".")
    i = _MONTH_INDEX.get(name[:3])
    return i if i and MONTHS[i - 1].lower().startswith(name) else None


def find_dates(text: str) -> list[date]:
    """Every complete date in ``text``, in order: ISO (``2025-03-14``), ``March 14, 2025``, ``14 March 2025``.

    >>> find_dates("From 2025-03-14 to March 20th, 2025, not 1 April 2025 or 2025-02-30 or May 5.")
    [datetime.date(2025, 3, 14), datetime.date(2025, 3, 20), datetime.date(2025, 4, 1)]
    """
    found = []
    for m in _DATES.finditer(text):
        g = m.groupdict()
        if g["y1"]:
            y, mo, d = int(g["y1"]), int(g["m1"]), int(g["d1"])
        else:
            mo = _month(g["n2"] or g["n3"]) or 0
            y, d = int(g["y2"] or g["y3"] or 0), int(g["d2"] or g["d3"])
        try:
            found.append(date(y, mo, d))
        except ValueError:  # not a real date, or a day and month without a year
            continue
    return found


def _regions(text: str) -> list[str]:
    """Where to look for the answer, best first: the last \\boxed{}, after the last "Answer:", the whole text."""
    boxed = _BOXED.findall(text)
    marks = list(_ANSWER.finditer(text))
    return ([boxed[-1]] if boxed else []) + ([text[marks[-1].end():]] if marks else []) + [text]


def _last_count(text: str) -> int | None:
    """The last whole number once dates and times are removed (so "205 days until 2025-12-25" reads 205)."""
    text = _TIMES.sub(" ", _DATES.sub(" ", text.replace("\u2212", "-")))
    found = _INTEGER.findall(text)
    if not found:
        return None
    value = float(found[-1].replace(",", ""))
    return int(value) if value.is_integer() else None


def verify(task: Task, final_answer: str) -> bool:
    """True iff the answer's last date / weekday / number of days (by the ground truth's type) is the ground truth.

    Like the calculator, the *last* one counts (inside the last \\boxed{} or after "Answer:" when present), so
    "45 days after 2025-03-14 is 2025-04-28" reads 2025-04-28 and a list of guesses is not rewarded.

    >>> t = Task("t", "datetime", "What date is 45 days after 2025-03-14?", '"2025-04-28"')
    >>> verify(t, "It is April 28, 2025."), verify(t, "45 days after 2025-03-14 is 2025-04-29.")
    (True, False)
    """
    try:
        expected = task.answer_value()
    except ValueError:
        return False
    read = _reader(expected)
    if read is None or not isinstance(final_answer, str):
        return False
    for region in _regions(final_answer):
        got = read(region)
        if got is not None:
            return got == expected
    return False


def _reader(expected: object):
    """How to read an answer of ``expected``'s kind: a count (int), a weekday name, or an ISO date (str)."""
    if isinstance(expected, int) and not isinstance(expected, bool):
        return _last_count
    if isinstance(expected, str) and expected in WEEKDAYS:
        return _last_weekday
    if isinstance(expected, str) and _is_iso(expected):
        return _last_date
    return None


def _last_weekday(text: str) -> str | None:
    names = _WEEKDAY_NAMES.findall(text)
    return next(w for w in WEEKDAYS if w.lower()[:3] == names[-1].lower()[:3]) if names else None


def _last_date(text: str) -> str | None:
    dates = find_dates(text)
    return dates[-1].isoformat() if dates else None


def _is_iso(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


# ---- the environment ----


class DateTimeEnv(AnswerEnv):
    """One episode at a time: the model may call the date tools any number of times, then answers in text."""

    name = "datetime"
    system_prompt = SYSTEM_PROMPT

    def tools_for(self, task: Task) -> dict[str, Tool]:
        """``now`` reads this task's clock (``meta.now``), so a prompt's stale "today" can be checked."""
        clock = task_clock(task)
        return {t.name: t for t in (replace(NOW_TOOL, fn=partial(now, clock)), DATE_ADD_TOOL, DATE_DIFF_TOOL,
                                    WEEKDAY_TOOL)}

    def verify(self, task: Task, answer: str) -> bool:
        return verify(task, answer)


def task_clock(task: Task) -> datetime | None:
    """The task's world clock (``meta.now``, ISO 8601; UTC when it has no offset); None when it sets none."""
    value = task.meta_value().get("now")
    if value is None:
        return None
    try:
        clock = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"task {task.task_id!r}: meta.now {value!r} is not an ISO 8601 datetime. "
                         "Fix: set it like \"2025-06-03T14:25:00+00:00\", or leave it out") from None
    return clock if clock.tzinfo else clock.replace(tzinfo=_UTC)
