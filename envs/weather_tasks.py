"""Weather tasks and their scripted expert: seeded, split by date, every failure schedule stored in the task.

Four kinds. ``lookup``: "What's the high in Oslo on 2025-05-02 in °C?" (the service's own number). ``convert``: the
same in °F, to one decimal (the calculator converts). ``compare``: the difference of two cities' highs on one day
("Madrid minus Oslo", in °C). ``unknown_city``: a city the service does not cover; the right answer says there is no
data for it, after retrying only the transient failures before the 404.

``meta`` holds ``kind``, ``difficulty``, ``seed`` (the world: weather and failures), ``unit``, ``field``,
``cities``, ``date`` and ``lookups``: one entry per city the task needs, ``{"city", "date", "failures"}``, where
``failures[k]`` is how attempt k of that lookup fails (attempts past the list succeed). The env replays it exactly.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, timedelta
from functools import lru_cache

from envs.answer_env import expert_transcript
from envs.calculator import CALCULATOR_TOOL
from envs.chat import format_tool_call
from envs.tasks import Task
from envs.tool_calls import ToolCall
from envs.weather_env import (
    CITIES,
    FIRST_DATE,
    GET_WEATHER_TOOL,
    LAST_DATE,
    MAX_RETRIES,
    TRANSIENT,
    WeatherEnv,
    draw_failures,
    failure_of,
    weather,
)

__all__ = ["KINDS", "SPLITS", "UNKNOWN_CITIES", "generate_tasks", "scripted_expert", "transcript"]

# kind -> difficulty: 1 = one lookup; 2 = one lookup and a conversion, or knowing when to stop; 3 = two lookups and
# a difference. Transient failures come on top in every kind (half of all lookups fail at least once).
KINDS = {"lookup": 1, "convert": 2, "compare": 3, "unknown_city": 2}
KIND_WEIGHTS = (0.3, 0.25, 0.25, 0.2)  # in KINDS order: unknown cities often enough to learn to stop, not to expect
# Each date belongs to exactly one split (by its hash): no test day's weather is ever a training answer.
SPLITS = {"train": range(0, 80), "val": range(80, 90), "test": range(90, 100)}
UNKNOWN_CITIES = ("Nuuk", "Ulaanbaatar", "Timbuktu", "Hobart", "Yellowknife", "Ushuaia", "Longyearbyen")
_TRIES = 1000  # draws per task before giving up on finding a distinct one

_LOOKUP = ["What's the {field} in {city} on {d} in °C?", "What will the {field} temperature be in {city} on {d}? "
           "Answer in °C.", "Look up the daily {field} for {city} on {d}, in °C."]
_CONVERT = ["What's the {field} in {city} on {d} in °F, to one decimal?", "I think in Fahrenheit: what is the "
            "{field} in {city} on {d}? Give it in °F to one decimal."]
_COMPARE = ["How much warmer was the high in {a} than in {b} on {d}? Give {a} minus {b} in °C.",
            "What is the difference between the daily highs of {a} and {b} on {d}, in °C ({a} minus {b})?"]
_RETRY_NOTES = {"timeout": "The weather service timed out; that is usually temporary, so I will try again.",
                "http_500": "The service returned a server error (HTTP 500); trying again.",
                "malformed": "That response was cut off and is not valid JSON, so I will ask again."}


# ---- task generation ----


def generate_tasks(n: int, seed: int, split: str = "train") -> list[Task]:
    """``n`` distinct weather tasks, the same for the same (n, seed, split); splits never share a date."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    rng = random.Random(f"weather:{split}:{seed}")  # str seeds hash with sha512: stable across processes
    days = _days(split)
    tasks: list[Task] = []
    seen: set[str] = set()
    for _ in range(n):
        kind = rng.choices(list(KINDS), KIND_WEIGHTS)[0]
        for _ in range(_TRIES):
            day = rng.choice(days).isoformat()
            field = "high" if kind == "compare" else rng.choice(["high", "low"])
            if kind == "unknown_city":
                cities = [rng.choice(UNKNOWN_CITIES)]
            else:
                cities = rng.sample(list(CITIES), 2 if kind == "compare" else 1)
            identity = json.dumps([kind, cities, day, field])
            if identity not in seen:
                break
        else:
            raise ValueError(f"could only generate {len(tasks)} distinct {split} weather tasks of {n} requested")
        seen.add(identity)
        world = rng.randrange(2**31)
        prompt, unit, answer = _question(rng, kind, cities, day, field, world)
        lookups = [{"city": c, "date": day, "failures": draw_failures(world, c, day)} for c in cities]
        meta = {"split": split, "kind": kind, "difficulty": KINDS[kind], "seed": world, "unit": unit,
                "field": field, "cities": cities, "date": day, "lookups": lookups}
        tasks.append(Task(task_id=f"weather-{split}-{seed}-{len(tasks)}", env="weather", prompt=prompt,
                          answer=json.dumps(answer), meta=json.dumps(meta)))
    return tasks


@lru_cache(maxsize=3)
def _days(split: str) -> list[date]:
    span = (LAST_DATE - FIRST_DATE).days
    return [d for d in (FIRST_DATE + timedelta(days=i) for i in range(span + 1)) if _split_of(d) == split]


def _split_of(day: date) -> str:
    bucket = int.from_bytes(hashlib.sha256(f"weather-date:{day.isoformat()}".encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _question(rng: random.Random, kind: str, cities: list[str], day: str, field: str, world: int):
    """(prompt, unit, ground truth) of one task; temperatures from the world's own service."""
    if kind == "compare":
        a, b = cities
        high_a, high_b = (weather(c, date.fromisoformat(day), world)["high_c"] for c in cities)
        return rng.choice(_COMPARE).format(a=a, b=b, d=day), "C", round(high_a - high_b, 1)
    city = cities[0]
    fahrenheit = kind == "convert" or (kind == "unknown_city" and rng.random() < 0.3)
    prompt = rng.choice(_CONVERT if fahrenheit else _LOOKUP).format(field=field, city=city, d=day)
    if kind == "unknown_city":
        return prompt, "F" if fahrenheit else "C", {"unavailable": city}
    celsius = weather(city, date.fromisoformat(day), world)[f"{field}_c"]
    return prompt, "F" if fahrenheit else "C", round(celsius * 9 / 5 + 32, 2) if fahrenheit else celsius


# ---- the scripted expert ----


def scripted_expert(task: Task) -> list[dict]:
    """The messages an expert adds after the prompt, played through a fresh env (every tool message is the env's own
    observation): each lookup retried after a transient failure, at most ``MAX_RETRIES`` times, with a one-line
    note of why; after an unknown city, a polite answer without retrying; the calculator for °F and differences.
    """
    meta = task.meta_value()
    kind, day, field = meta.get("kind"), meta.get("date"), meta.get("field", "high")
    if kind not in KINDS or not isinstance(day, str) or not meta.get("cities"):
        raise ValueError(f"task {task.task_id!r} has meta.kind {kind!r}, not one of {', '.join(KINDS)}, or no "
                         "meta.date / meta.cities: scripted_expert needs them to call the tools")
    env = WeatherEnv()
    env.reset(task)
    steps: list[dict] = []

    def call(name: str, arguments: dict, note: str | None = None) -> str:
        text = format_tool_call(name, arguments)
        observation = env.step(ToolCall(name, arguments, raw=text, strict=True)).observation or ""
        steps.extend([{"role": "assistant", "content": f"{note}\n{text}" if note else text},
                      {"role": "tool", "name": name, "content": observation}])
        return observation

    def lookup(city: str) -> dict | str:
        """The payload, or why the expert stopped: unknown_city, invalid, or gave_up after MAX_RETRIES retries."""
        note = None
        for _ in range(1 + MAX_RETRIES):
            observation = call(GET_WEATHER_TOOL.name, {"city": city, "date": day}, note)
            failure = failure_of(observation)
            if failure is None:
                return json.loads(observation)
            if failure not in TRANSIENT:
                return failure
            note = _RETRY_NOTES[failure]
        return "gave_up"

    results = []
    for city in meta["cities"]:
        result = lookup(city)
        if isinstance(result, str):
            return [*steps, {"role": "assistant", "content": _no_data(city, day, field, result)}]
        results.append(result)
    if kind == "lookup":
        answer = f"The {field} in {results[0]['city']} on {day} is {results[0][f'{field}_c']:.1f} °C."
    elif kind == "convert":
        celsius = results[0][f"{field}_c"]
        fahrenheit = float(call(CALCULATOR_TOOL.name, {"expression": f"{celsius} * 9 / 5 + 32"}))
        answer = f"The {field} in {results[0]['city']} on {day} is {celsius:.1f} °C, which is {fahrenheit:.1f} °F."
    else:
        (a, high_a), (b, high_b) = ((r["city"], r["high_c"]) for r in results)
        subtrahend = f"({high_b})" if high_b < 0 else f"{high_b}"
        difference = float(call(CALCULATOR_TOOL.name, {"expression": f"{high_a} - {subtrahend}"}))
        answer = (f"On {day} the high was {high_a:.1f} °C in {a} and {high_b:.1f} °C in {b}, so {a} minus {b} is "
                  f"{difference:.1f} °C.")
    return [*steps, {"role": "assistant", "content": answer}]


def _no_data(city: str, day: str, field: str, why: str) -> str:
    if why == "unknown_city":
        return (f"I'm sorry, I have no weather data for {city}: the weather service does not cover it (unknown "
                f"city), so I can't tell you the {field} there on {day}.")
    return f"I'm sorry, the weather service kept failing for {city} on {day}, so I can't tell you the {field}."


def transcript(task: Task) -> str:
    """The scripted expert's episode played through a fresh env, as text; every tool line is the env's observation.

    >>> meta = {"kind": "lookup", "seed": 7, "unit": "C", "field": "high", "cities": ["Oslo"], "date": "2025-05-02",
    ...         "lookups": [{"city": "Oslo", "date": "2025-05-02", "failures": ["timeout"]}]}
    >>> print(transcript(Task("t", "weather", "What's the high in Oslo on 2025-05-02 in °C?", "13.9",
    ...                       json.dumps(meta))))  # doctest: +ELLIPSIS
    user: What's the high in Oslo on 2025-05-02 in °C?
    assistant: <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo", "date": "2025-05-02"}}
    </tool_call>
    tool: error: timeout after 2.0 s, try again
    assistant: The weather service timed out; that is usually temporary, so I will try again.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo", "date": "2025-05-02"}}
    </tool_call>
    tool: {"city": "Oslo", "date": "2025-05-02", "units": "metric", "high_c": 13.9, "low_c": 7.1, ...}
    assistant: The high in Oslo on 2025-05-02 is 13.9 °C.
    (reward 1.0)
    """
    return expert_transcript(WeatherEnv(), task, scripted_expert(task))


if __name__ == "__main__":  # sample transcripts, one per kind: python -m envs.weather_tasks
    shown: set[str] = set()
    for t in generate_tasks(60, seed=0):
        kind = t.meta_value()["kind"]
        if kind not in shown and any(x["failures"] for x in t.meta_value()["lookups"]):
            shown.add(kind)
            print(f"## {kind} ({t.task_id}; answer {t.answer}; lookups {json.dumps(t.meta_value()['lookups'])})\n"
                  f"{transcript(t)}\n")
