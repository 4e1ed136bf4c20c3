"""Retry quality: after a failed tool call, did the policy do the right next thing?

Scored on the weather env's ``get_weather`` calls (``envs.weather_env``), grouped by what they asked for (city and
date, ignoring case): each failure is a decision point, judged by whether the *same* call came again.

- a transient failure (timeout, HTTP 5xx, a cut-off payload), then the same call again: +1 for retries 1 to
  ``max_retries`` (3), -1 for each retry beyond;
- a transient failure, then no more of that call: -1 (it gave up on a call that would have answered), unless
  ``max_retries`` retries were already spent, then +1;
- a permanent failure (unknown city), then the same call again: -1, asking again cannot change a 404;
- a permanent failure, then no more of that call: +1;
- any other repeat of a call already made 1 + ``max_retries`` times (say after it answered): -1.

The episode's value is the mean over its decision points, in [-1, 1]; 0.0 when no call failed (nothing to judge,
so every other env scores a constant 0 and its advantages do not move). A call with different arguments is a new
call, not a retry (fixing a misspelt city is right); errors that are the caller's fault (a bad date, a missing
argument) are not decision points: ``tool_use`` already charges for them.

Why these magnitudes: the orderings the env is for hold inside one episode's value (retry-then-success 1.0 >
give-up-after-one-transient -1.0; polite stop on a 404 1.0 > one retry then stop 0.0 > two retries then stop -1/3).
Its span is 2 x its weight, and it adds to the other shaping (format + tool_use move the total by up to 0.6 with the
default weights), so keep the weight at 0.15 or below: 0.6 + 0.3 < 1.0, the outcome weight, so a right answer
always beats a wrong one however well the wrong one retried.
"""

from __future__ import annotations

import json

from actors.trajectory import Trajectory
from envs.tasks import Task
from envs.weather_env import GET_WEATHER_TOOL, MAX_RETRIES, PERMANENT, TRANSIENT, failure_of
from rewards.tool_shaping import tool_results

__all__ = ["retry_quality", "decisions", "GOOD", "BAD"]

GOOD, BAD = 1.0, -1.0


def decisions(trajectory: Trajectory, *, max_retries: int = MAX_RETRIES) -> list[float]:
    """The value of every decision point of the episode (see the module doc), call by call in order."""
    outcomes: dict[tuple[str, str], list[str | None]] = {}
    for record, result in zip(trajectory.tool_calls, tool_results(trajectory), strict=True):
        if record.name != GET_WEATHER_TOOL.name:
            continue
        key = _key(record.arguments)
        if key is not None:
            outcomes.setdefault(key, []).append(failure_of(result))
    values = []
    for attempts in outcomes.values():
        for i, failure in enumerate(attempts):
            retried = i + 1 < len(attempts)  # the same call came again after this attempt
            spent = i >= max_retries  # this attempt was already retry number max_retries (or later)
            if failure in TRANSIENT:
                values.append((BAD if spent else GOOD) if retried else (GOOD if spent else BAD))
            elif failure == PERMANENT:
                values.append(BAD if retried else GOOD)
            elif retried and spent:  # one more repeat of a call already asked 1 + max_retries times
                values.append(BAD)
    return values


def _key(arguments: str) -> tuple[str, str] | None:
    try:
        args = json.loads(arguments)
    except ValueError:
        return None
    city, day = (args.get("city"), args.get("date")) if isinstance(args, dict) else (None, None)
    if not isinstance(city, str) or not isinstance(day, str):
        return None
    return city.strip().casefold(), day.strip()


def retry_quality(trajectory: Trajectory, task: Task, *, max_retries: int = MAX_RETRIES) -> float:
    """The mean value of the episode's decision points after failed ``get_weather`` calls; 0.0 with none
    (``task`` is unused: the observations say what failed).

    >>> from actors.trajectory import ToolCallRecord
    >>> from rewards._examples import example_trajectory
    >>> def call(result, city="Oslo"):
    ...     args = json.dumps({"city": city, "date": "2025-05-02"})
    ...     return ToolCallRecord(0, "get_weather", args, not result.startswith("error:")), result
    >>> ok, timeout = '{"high_c": 13.9, "low_c": 7.1}', "error: timeout after 2.0 s, try again"
    >>> unknown = "error: unknown city 'Nuuk' (404 Not Found): ..."
    >>> task = Task("t", "weather", "What's the high in Oslo on 2025-05-02?", "13.9")
    >>> def score(*calls):
    ...     return round(retry_quality(example_trajectory(calls=list(calls), final_answer="..."), task), 3)
    >>> score(call(timeout), call(ok)), score(call(timeout)), score(call(ok))  # retried; gave up; nothing failed
    (1.0, -1.0, 0.0)
    >>> score(call(unknown, "Nuuk")), score(call(unknown, "Nuuk"), call(unknown, "Nuuk"))  # stopped; retried a 404
    (1.0, 0.0)
    >>> score(*[call(timeout)] * 5, call(ok))  # 3 retries are right, the 4th and 5th are too many
    0.2
    """
    values = decisions(trajectory, max_retries=max_retries)
    return sum(values) / len(values) if values else 0.0
