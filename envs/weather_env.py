"""The weather environment: a flaky weather service, so the policy learns when to retry a tool and when to stop.

The service is local and deterministic: the weather of (city, date) is a function of the task's ``meta.seed``
(a climate per city plus seeded noise; no network). Its failures are drawn per lookup from the same seed and stored
in the task (``meta.lookups``: attempt k of the lookup of (city, date) fails with ``failures[k]``), so an episode
replays exactly:

- ``timeout``: ``error: timeout after 2.0 s, try again`` (transient);
- ``http_500``: ``error: HTTP 500 Internal Server Error from the weather service`` (transient);
- ``malformed``: a payload cut off before its temperatures, not valid JSON; it *runs* (``ok`` True), so the model
  has to recognise it as broken (transient);
- ``unknown_city``: ``error: unknown city ... (404 Not Found)``: permanent, retrying is wrong; tell the user.

Every transient schedule ends within ``MAX_RETRIES`` (3) retries of the same call. A ``calculator`` tool (the
calculator env's own) does the °F conversions and differences. Tasks and the scripted expert are in
``envs.weather_tasks``; the retry scorer is ``rewards.retry``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import replace
from datetime import date

from envs.answer_env import AnswerEnv
from envs.base import Tool, ToolError
from envs.calculator import CALCULATOR_TOOL
from envs.datetime_env import parse_date
from envs.tasks import Task

__all__ = ["WeatherEnv", "WeatherService", "weather", "draw_failures", "failure_of", "GET_WEATHER_TOOL",
           "SYSTEM_PROMPT", "verify", "read_temperature", "CITIES", "TRANSIENT", "PERMANENT", "MAX_RETRIES",
           "TIMEOUT_S", "FIRST_DATE", "LAST_DATE"]

TIMEOUT_S = 2.0  # the simulated client timeout named in the error; nothing sleeps
MAX_RETRIES = 3  # retries of one call the schedules need at most, and the most the retry scorer rewards
TRANSIENT = ("timeout", "http_500", "malformed")
PERMANENT = "unknown_city"
FAIL_P = (0.5, 0.4, 0.3)  # P(attempt k fails | attempts before it failed); at most len(FAIL_P) failures per lookup
KIND_P = (("timeout", 0.4), ("http_500", 0.35), ("malformed", 0.25))
FIRST_DATE, LAST_DATE = date(2020, 1, 1), date(2030, 12, 31)  # the service's archive and forecast range
TOLERANCE = 0.05 + 1e-6  # answers to one decimal: any correct rounding of the exact value is within 0.05

# city -> (mean daily high over the year in °C, half the summer-winter swing, southern hemisphere)
CITIES: dict[str, tuple[float, float, bool]] = {
    "Oslo": (10.5, 11.0, False), "Stockholm": (10.0, 11.0, False), "Helsinki": (9.0, 12.0, False),
    "London": (15.0, 7.0, False), "Paris": (16.0, 8.5, False), "Berlin": (14.0, 10.0, False),
    "Madrid": (20.0, 10.0, False), "Rome": (21.0, 8.5, False), "Athens": (23.0, 8.5, False),
    "Cairo": (28.0, 7.0, False), "Nairobi": (24.0, 2.0, True), "Cape Town": (22.0, 4.5, True),
    "Dubai": (33.0, 8.0, False), "Mumbai": (31.5, 2.0, False), "Delhi": (31.0, 8.0, False),
    "Singapore": (31.0, 1.0, False), "Tokyo": (20.0, 8.5, False), "Seoul": (17.5, 13.0, False),
    "Beijing": (18.0, 14.0, False), "Sydney": (22.0, 4.0, True), "Auckland": (19.0, 4.0, True),
    "Buenos Aires": (22.5, 6.0, True), "Sao Paulo": (25.0, 3.0, True), "Lima": (22.0, 3.5, True),
    "Mexico City": (24.0, 2.5, False), "New York": (17.0, 11.0, False), "Chicago": (15.0, 14.0, False),
    "Toronto": (13.0, 13.0, False), "Vancouver": (14.0, 8.0, False), "Los Angeles": (23.0, 3.5, False),
}
_BY_NAME = {name.casefold(): name for name in CITIES}
_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "rain")


# ---- the service ----


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) from ``parts``, the same in every process (sha256, not ``hash``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def weather(city: str, day: date, seed: int) -> dict:
    """The service's payload for a covered ``city`` on ``day`` in world ``seed``: temperatures to one decimal, then
    ``condition``, ``precip_mm`` and ``wind_kph``.

    >>> weather("Oslo", date(2025, 5, 2), seed=7)  # doctest: +ELLIPSIS
    {'city': 'Oslo', 'date': '2025-05-02', 'units': 'metric', 'high_c': 13.9, 'low_c': 7.1, ...}
    """
    mean, swing, southern = CITIES[city]
    peak = 17 if southern else 200  # day of the year of the warmest days: mid-January south, mid-July north
    season = math.cos(2 * math.pi * (day.timetuple().tm_yday - peak) / 365.25)
    high = round(mean + swing * season + 8 * _unit(seed, city, day, "high") - 4, 1)
    low = round(high - 4 - 6 * _unit(seed, city, day, "low"), 1)
    u = _unit(seed, city, day, "sky")
    condition = "snow" if high < 1 and u < 0.5 else _CONDITIONS[int(u * len(_CONDITIONS))]
    precip = round(0.5 + 12 * _unit(seed, city, day, "precip"), 1) if condition in ("rain", "snow") else 0.0
    wind = 3 + int(37 * _unit(seed, city, day, "wind"))
    return {"city": city, "date": day.isoformat(), "units": "metric", "high_c": high, "low_c": low,
            "condition": condition, "precip_mm": precip, "wind_kph": wind}


def draw_failures(seed: int, city: str, day: str) -> list[str]:
    """The failures of the lookup of (``city``, ``day``) in episode ``seed``, attempt by attempt: transient kinds
    drawn per attempt, at most ``len(FAIL_P)`` of them, then ``unknown_city`` for a city the service does not cover.

    >>> draw_failures(3, "Oslo", "2025-05-02"), draw_failures(3, "Nuuk", "2025-05-02")
    (['timeout'], ['http_500', 'timeout', 'timeout', 'unknown_city'])
    """
    failures = []
    for attempt, p in enumerate(FAIL_P):
        if _unit(seed, city, day, attempt, "fails") >= p:
            break
        u = _unit(seed, city, day, attempt, "kind")
        for kind, q in KIND_P:
            u -= q
            if u < 0:
                break
        failures.append(kind)
    if city.strip().casefold() not in _BY_NAME:
        failures.append(PERMANENT)
    return failures


class WeatherService:
    """One episode's service: its world seed, its failure schedule and how often each lookup was attempted."""

    def __init__(self, seed: int, lookups: list[dict] | None = None) -> None:
        self.seed = seed
        self.schedule = {_key(x["city"], x["date"]): list(x.get("failures", [])) for x in lookups or []}
        self.attempts: Counter = Counter()

    def get_weather(self, city: str, date: str) -> str:
        """The payload as JSON text, or the failure the schedule (or the city) calls for. A malformed date or a
        date out of range is the caller's mistake, answered before any request: it consumes no attempt."""
        day = parse_date(date, "date")
        if not FIRST_DATE <= day <= LAST_DATE:
            raise ToolError(f"no data for {day.isoformat()}: the service covers {FIRST_DATE.isoformat()} to "
                            f"{LAST_DATE.isoformat()}")
        key = _key(city, day.isoformat())
        attempt = self.attempts[key]
        self.attempts[key] += 1
        failures = self.schedule.get(key, [])
        kind = failures[attempt] if attempt < len(failures) else None
        if kind == "timeout":
            raise ToolError(f"timeout after {TIMEOUT_S} s, try again")
        if kind == "http_500":
            raise ToolError("HTTP 500 Internal Server Error from the weather service")
        name = _BY_NAME.get(key[0])
        if kind == "malformed":  # cut inside the key "high_c": the payload's start, and no temperature, survives
            head = json.dumps({"city": name or city.strip(), "date": day.isoformat(), "units": "metric", "high_c": 0},
                              ensure_ascii=False)
            return head[:head.index('"high_c"') + 1 + int(5 * _unit(self.seed, key, attempt, "cut"))]
        if kind == PERMANENT or name is None:  # after the transient failures: the request has to get through first
            raise ToolError(_unknown_city(city))
        return json.dumps(weather(name, day, self.seed), ensure_ascii=False)


def _key(city: str, day: str) -> tuple[str, str]:
    return city.strip().casefold(), day.strip()


def _unknown_city(city: str) -> str:
    close = difflib.get_close_matches(city.strip().title(), list(CITIES), n=1, cutoff=0.75)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"unknown city {city[:60]!r} (404 Not Found): the weather service has no data for it, and asking again "
            f"will not change that.{hint} Covered cities: {', '.join(CITIES)}")


def _unbound() -> str:
    raise ToolError("get_weather is not bound to an episode's service: call it through WeatherEnv")


def failure_of(observation: str) -> str | None:
    """What a ``get_weather`` observation is: None for a payload; ``timeout``, ``http_500`` or ``malformed``
    (transient); ``unknown_city`` (permanent); ``invalid`` for any other error (a bad argument: fix it, not retry).
    The runner's own timeout (``error: tool 'get_weather' timed out after 5s``) counts as a timeout.

    >>> [failure_of(o) for o in ('{"city": "Oslo", "high_c": 13.9, "low_c": 7.1}', '{"city": "Oslo", "hi',
    ...                          "error: timeout after 2.0 s, try again", "error: unknown city 'Nuuk' (404 ...)")]
    [None, 'malformed', 'timeout', 'unknown_city']
    """
    text = observation.strip()
    if text.startswith("error:"):
        if text.startswith("error: timeout") or "timed out" in text:
            return "timeout"
        if re.match(r"error: HTTP 5\d\d", text):
            return "http_500"
        return PERMANENT if text.startswith("error: unknown city") else "invalid"
    try:
        payload = json.loads(text)
    except ValueError:
        return "malformed"
    return None if isinstance(payload, dict) and "high_c" in payload and "low_c" in payload else "malformed"


GET_WEATHER_TOOL = Tool(
    name="get_weather",
    description="The daily weather of a city on a date from the weather service, as JSON: high_c and low_c in °C, "
    'condition, precip_mm, wind_kph. Example: {"city": "Oslo", "date": "2025-05-02"}.',
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "a city name, e.g. Oslo or New York"},
            "date": {"type": "string", "description": "a date as YYYY-MM-DD, e.g. 2025-05-02"},
        },
        "required": ["city", "date"],
        "additionalProperties": False,
    },
    fn=lambda city, date: _unbound(),  # the env binds each episode's own service at reset
)

SYSTEM_PROMPT = (
    "You are a weather assistant. Look the weather up with the get_weather tool; never guess it. The service is "
    "unreliable: when a call times out, returns a server error (HTTP 5xx) or a response that is cut off or not valid "
    "JSON, call it again with the same arguments, at most 3 times. When it says a city is unknown, asking again will "
    "not help: tell the user you have no weather data for that city. Temperatures are in °C; °F = °C * 9 / 5 + 32. "
    "Use the calculator for conversions and differences, and give temperatures to one decimal with their unit."
)


# ---- verifier ----

_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_TEMPERATURE = re.compile(
    r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*(?:(?:°|º|degrees?\s*)\s*(celsius|fahrenheit|c|f)\b|([cf])\b)?", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]", re.IGNORECASE)
_CANNOT = re.compile(r"no (?:weather )?data|not (?:available|covered|supported)|unavailable|unknown city|no station|"
                     r"(?:could|can|do|does)(?: not|n't)|cannot|unable", re.IGNORECASE)


def read_temperature(text: str, unit: str) -> float | None:
    """The last temperature in ``unit`` ("C" or "F") in ``text``: the last number marked with that unit, else the
    last unmarked one; None when only the other unit's numbers are there. Dates are removed first.

    >>> read_temperature("On 2025-05-02 Oslo had 14.4 °C (57.9 °F).", "C"), read_temperature("It was 57.9F", "C")
    (14.4, None)
    """
    text = _DATE.sub(" ", text.replace("\u2212", "-"))
    marked, unmarked = [], []
    for m in _TEMPERATURE.finditer(text):
        tag = (m.group(2) or m.group(3) or "").upper()[:1]  # "C", "F" or "" (celsius -> C)
        if not tag:
            unmarked.append(float(m.group(1)))
        elif tag == unit:
            marked.append(float(m.group(1)))
    found = marked or unmarked
    return found[-1] if found else None


def verify(task: Task, final_answer: str) -> bool:
    """True iff the answer gives the ground truth: a temperature to one decimal (the last one in the asked unit,
    inside the last \\boxed{} or after "Answer:" when present; or, for a °C lookup, the service's own payload), or
    for an unknown city, a reply that names it, says there is no data, and states no temperature.

    >>> t = Task("t", "weather", "What's the high in Oslo on 2025-05-02 in °C?", "14.4",
    ...          '{"kind": "lookup", "unit": "C", "field": "high"}')
    >>> verify(t, "The high in Oslo on 2025-05-02 is 14.4 °C."), verify(t, "About 14 °C."), verify(t, "57.9 °F")
    (True, False, False)
    """
    try:
        expected, meta = task.answer_value(), task.meta_value()
    except ValueError:
        return False
    if not isinstance(final_answer, str):
        return False
    if isinstance(expected, dict) and isinstance(expected.get("unavailable"), str):
        city = expected["unavailable"]
        return (city.casefold() in final_answer.casefold() and _CANNOT.search(final_answer) is not None
                and not any(m.group(2) or m.group(3) for m in _TEMPERATURE.finditer(_DATE.sub(" ", final_answer))))
    if not isinstance(expected, (int, float)) or isinstance(expected, bool):
        return False
    unit = meta.get("unit", "C")
    got = _from_payload(final_answer, meta)
    if got is None:
        for region in _regions(final_answer):
            got = read_temperature(region, unit)
            if got is not None:
                break
    return got is not None and abs(got - expected) <= TOLERANCE


def _from_payload(text: str, meta: dict) -> float | None:
    """A °C lookup answered by the service's own JSON (so tool shaping counts the lookup call as correct)."""
    if meta.get("kind") != "lookup" or meta.get("unit", "C") != "C" or not text.lstrip().startswith("{"):
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    value = payload.get(f"{meta.get('field', 'high')}_c") if isinstance(payload, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _regions(text: str) -> list[str]:
    boxed = _BOXED.findall(text)
    marks = list(_ANSWER.finditer(text))
    return ([boxed[-1]] if boxed else []) + ([text[marks[-1].end():]] if marks else []) + [text]


# ---- the environment ----


def _valid_lookup(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("city"), str) and isinstance(entry.get("date"), str)
            and isinstance(entry.get("failures", []), list)
            and all(f in (*TRANSIENT, PERMANENT) for f in entry.get("failures", [])))


class WeatherEnv(AnswerEnv):
    """One episode at a time: get_weather (this episode's service) and the calculator, then an answer in text."""

    name = "weather"
    system_prompt = SYSTEM_PROMPT

    def __init__(self) -> None:
        super().__init__()
        self.service: WeatherService | None = None

    def tools_for(self, task: Task) -> dict[str, Tool]:
        """get_weather runs on a service built for this task (its seed and injected failures), plus the calculator."""
        meta = task.meta_value()
        seed = meta.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"task {task.task_id!r}: meta.seed {seed!r} is not an integer. Fix: set an int world "
                             "seed, or leave it out for 0")
        lookups = meta.get("lookups") or []
        if not isinstance(lookups, list) or not all(_valid_lookup(x) for x in lookups):
            raise ValueError(f"task {task.task_id!r}: meta.lookups must be a list of {{\"city\": str, \"date\": str, "
                             f"\"failures\": [kind, ...]}} with kinds from {', '.join((*TRANSIENT, PERMANENT))}. Fix: "
                             "write it as generate_tasks does, or leave it out for no injected failures")
        self.service = WeatherService(seed, lookups)
        return {GET_WEATHER_TOOL.name: replace(GET_WEATHER_TOOL, fn=self.service.get_weather),
                CALCULATOR_TOOL.name: CALCULATOR_TOOL}

    def verify(self, task: Task, answer: str) -> bool:
        return verify(task, answer)
