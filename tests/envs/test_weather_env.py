"""The weather env: the deterministic service, the failure schedule replayed exactly, error observations, tasks
(splits by date, answers from an independent computation), the verifier, and the scripted expert played through the
env."""

from __future__ import annotations

import doctest
import json
from datetime import date

import pytest

import envs
from envs import weather_env, weather_tasks
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls
from envs.weather_env import (
    CITIES,
    MAX_RETRIES,
    PERMANENT,
    TRANSIENT,
    WeatherEnv,
    draw_failures,
    failure_of,
    read_temperature,
    verify,
    weather,
)
from envs.weather_tasks import KINDS, UNKNOWN_CITIES, generate_tasks, scripted_expert

pytestmark = pytest.mark.timeout(60)


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(name, arguments, raw="", strict=True)


def task(answer, failures: list[str] | None = None, city: str = "Oslo", **meta) -> Task:
    meta = {"kind": "lookup", "seed": 7, "unit": "C", "field": "high", "cities": [city], "date": "2025-05-02",
            "lookups": [{"city": city, "date": "2025-05-02", "failures": failures or []}], **meta}
    return Task("t", "weather", "What's the high in Oslo on 2025-05-02 in °C?", json.dumps(answer), json.dumps(meta))


def started(failures: list[str] | None = None, city: str = "Oslo") -> WeatherEnv:
    env = WeatherEnv()
    env.reset(task(13.9, failures, city))
    return env


def oslo(env: WeatherEnv, city: str = "Oslo", day: str = "2025-05-02") -> str:
    return env.step(call("get_weather", city=city, date=day)).observation


# ---- the service ----


def test_weather_is_a_function_of_city_date_and_seed():
    a = weather("Oslo", date(2025, 5, 2), seed=7)
    assert a == weather("Oslo", date(2025, 5, 2), seed=7) and a["high_c"] == 13.9
    assert a != weather("Oslo", date(2025, 5, 2), seed=8) and a != weather("Oslo", date(2025, 5, 3), seed=7)
    for city, (mean, swing, _) in CITIES.items():
        for day in (date(2024, 1, 15), date(2024, 7, 15)):
            w = weather(city, day, seed=1)
            assert mean - swing - 4 <= w["high_c"] <= mean + swing + 4 and w["low_c"] < w["high_c"]
            assert round(w["high_c"], 1) == w["high_c"] and w["units"] == "metric"
    # seasons: Oslo's July is warmer than its January, Sydney's the other way round
    assert weather("Oslo", date(2024, 7, 15), 0)["high_c"] > weather("Oslo", date(2024, 1, 15), 0)["high_c"]
    assert weather("Sydney", date(2024, 7, 15), 0)["high_c"] < weather("Sydney", date(2024, 1, 15), 0)["high_c"]


def test_observations_of_each_failure_kind():
    assert oslo(started(["timeout"])) == "error: timeout after 2.0 s, try again"
    assert oslo(started(["http_500"])) == "error: HTTP 500 Internal Server Error from the weather service"
    broken = oslo(started(["malformed"]))
    assert broken.startswith('{"city": "Oslo", "date": "2025-05-02", "units": "metric", "')
    assert "13.9" not in broken and failure_of(broken) == "malformed"
    with pytest.raises(ValueError):
        json.loads(broken)
    nuuk = oslo(started(["unknown_city"], city="Nuuk"), city="Nuuk")
    assert nuuk.startswith("error: unknown city 'Nuuk' (404 Not Found): the weather service has no data for it, and "
                           "asking again will not change that. Covered cities: Oslo, Stockholm")
    assert "Did you mean 'Oslo'?" in oslo(started(), city="Olso")  # a typo: fixing it is a new call, not a retry
    assert json.loads(oslo(started()))["high_c"] == 13.9
    assert json.loads(oslo(started(), city=" oslo "))["city"] == "Oslo"  # case and spaces do not matter


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"city": "Oslo", "date": "May 2, 2025"}, "invalid date 'May 2, 2025' for 'date': expected YYYY-MM-DD; write "
                                                  "it as 2025-05-02"),
        ({"city": "Oslo", "date": "2031-01-01"}, "no data for 2031-01-01: the service covers 2020-01-01 to 2030-12-31"),
        ({"city": "Oslo"}, "missing required 'date'"),
        ({"town": "Oslo", "date": "2025-05-02"}, "unexpected 'town'"),
    ],
)
def test_bad_arguments_are_errors_that_consume_no_attempt(arguments, message):
    env = started(["timeout"])
    step = env.step(call("get_weather", **arguments))
    assert step.observation.startswith("error: ") and message in step.observation and not step.info["ok"]
    assert failure_of(step.observation) == "invalid"
    assert oslo(env) == "error: timeout after 2.0 s, try again"  # the scheduled attempt 0 is still ahead


def test_failure_schedule_replays_exactly():
    """Attempt k of lookup c fails with meta.lookups[c].failures[k]; later attempts succeed (unknown cities: 404)."""
    tasks = generate_tasks(120, seed=3)
    assert sum(bool(x["failures"]) for t in tasks for x in t.meta_value()["lookups"]) > 40
    for t in tasks:
        observed = []
        for replay in range(2):
            env = WeatherEnv()
            env.reset(t)
            seen = [oslo(env, x["city"], x["date"]) for x in t.meta_value()["lookups"] for _ in range(6)]
            observed.append(seen)
            for i, x in enumerate(t.meta_value()["lookups"]):
                kinds = [failure_of(o) for o in seen[6 * i:6 * i + 6]]
                expected = x["failures"] + [PERMANENT if x["city"] in UNKNOWN_CITIES else None] * 6
                assert kinds == expected[:6], (t.task_id, x)
                assert x["failures"] == draw_failures(t.meta_value()["seed"], x["city"], x["date"])
        assert observed[0] == observed[1]  # observation for observation, payloads and cut-offs included
    assert tasks == generate_tasks(120, seed=3)


def test_failure_schedules_stay_within_the_retry_budget():
    schedules = [draw_failures(seed, city, "2025-05-02") for seed in range(300) for city in ("Oslo", "Nuuk")]
    for failures in schedules:
        transient = [f for f in failures if f != PERMANENT]
        assert len(transient) <= MAX_RETRIES and set(transient) <= set(TRANSIENT)
    kinds = {f for failures in schedules for f in failures}
    assert kinds == {*TRANSIENT, PERMANENT}
    assert 0.35 < sum(not f for f in schedules[::2]) / 300 < 0.65  # about half of the lookups never fail


def test_env_reset_and_step():
    env = WeatherEnv()
    t = task(13.9)
    messages, tools = env.reset(t)
    assert [m["role"] for m in messages] == ["system", "user"] and "at most 3 times" in messages[0]["content"]
    assert [tool.name for tool in tools] == ["get_weather", "calculator"]
    assert tools[0].schema()["function"]["parameters"]["required"] == ["city", "date"]
    assert env.step(call("calculator", expression="13.9 * 9 / 5 + 32")).observation == "57.02"
    final = env.step("The high in Oslo on 2025-05-02 is 13.9 °C.")
    assert (final.observation, final.reward, final.done, final.info) == (None, 1.0, True, {"correct": True})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")
    with pytest.raises(ValueError, match=r"meta.seed 'x' is not an integer\. Fix: set an int world seed"):
        WeatherEnv().reset(task(13.9, seed="x"))
    with pytest.raises(ValueError, match=r"meta.lookups must be a list of .* kinds from timeout, http_500, malformed, "
                                         r"unknown_city\. Fix: write it as generate_tasks does"):
        WeatherEnv().reset(task(13.9, ["slow"]))


def test_doctests():
    for module in (weather_env, weather_tasks):
        result = doctest.testmod(module)  # a failure's details are in the captured stdout
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---- verifier ----


@pytest.mark.parametrize(
    ("answer", "text", "meta", "ok"),
    [
        (13.9, "The high in Oslo on 2025-05-02 is 13.9 °C.", {}, True),
        (13.9, "13.9", {}, True),
        (13.9, "It will be 13.9 degrees Celsius on 2025-05-02", {}, True),  # the date's numbers do not count
        (13.9, "13.9 °C (57.0 °F)", {}, True),  # the last one in the asked unit
        (13.9, '{"city": "Oslo", "high_c": 13.9, "low_c": 7.1}', {}, True),  # the service's payload
        (13.9, "About 14 °C.", {}, False),
        (13.9, "The high is 13.9 °C and the low 7.1 °C.", {}, False),  # the last one counts
        (13.9, "57.0 °F", {}, False),  # wrong unit
        (-3.2, "It is \u22123.2 °C", {}, True),
        (57.02, "That is 57.0 °F.", {"unit": "F", "kind": "convert"}, True),
        (57.02, "That is 57.02F", {"unit": "F", "kind": "convert"}, True),
        (57.02, "That is 57.1 °F.", {"unit": "F", "kind": "convert"}, False),  # not a rounding of 57.02
        (57.62, "That is 58 °F.", {"unit": "F", "kind": "convert"}, False),  # one decimal was asked for
        (57.02, "That is 13.9 °C.", {"unit": "F", "kind": "convert"}, False),
        (57.02, '{"city": "Oslo", "high_c": 13.9, "low_c": 7.1}', {"unit": "F", "kind": "convert"}, False),
        (12.8, "Madrid 26.7 °C minus Oslo 13.9 °C is 12.8 °C.", {"kind": "compare"}, True),
        ({"unavailable": "Nuuk"}, "Sorry, I have no weather data for Nuuk.", {}, True),
        ({"unavailable": "Nuuk"}, "The weather service doesn't cover nuuk, so I can't tell you.", {}, True),
        ({"unavailable": "Nuuk"}, "Nuuk is not covered; it is probably about 3 °C there.", {}, False),  # a guess
        ({"unavailable": "Nuuk"}, "The high in Nuuk is 3.0 °C.", {}, False),
        ({"unavailable": "Nuuk"}, "Sorry, I have no data for that city.", {}, False),  # which city?
    ],
)
def test_verify(answer, text, meta, ok):
    assert verify(task(answer, **meta), text) is ok


def test_verify_rejects_unusable_ground_truth():
    assert not verify(Task("t", "weather", "q", "not json"), "13.9")
    assert not verify(task(True), "1") and not verify(task("13.9"), "13.9") and not verify(task(13.9), None)
    assert read_temperature("no numbers here", "C") is None


# ---- tasks ----


def test_generate_tasks_is_deterministic_and_covers_every_kind():
    tasks = generate_tasks(200, seed=7)
    assert tasks == generate_tasks(200, seed=7) and tasks != generate_tasks(200, seed=8)
    assert len({t.task_id for t in tasks}) == 200 and tasks[3].task_id == "weather-train-7-3"
    assert {t.meta_value()["kind"] for t in tasks} == set(KINDS)
    for t in tasks:
        meta = t.meta_value()
        assert meta["split"] == "train" and meta["difficulty"] == KINDS[meta["kind"]] and t.env == "weather"
        assert meta["date"] in t.prompt and all(c in t.prompt for c in meta["cities"])
        assert [x["city"] for x in meta["lookups"]] == meta["cities"]


def test_answers_match_an_independent_computation():
    for t in generate_tasks(300, seed=1):
        meta, answer = t.meta_value(), t.answer_value()
        day = date.fromisoformat(meta["date"])
        values = [weather(c, day, meta["seed"]) for c in meta["cities"] if c in CITIES]
        if meta["kind"] == "lookup":
            expected = values[0][f"{meta['field']}_c"]
        elif meta["kind"] == "convert":
            expected = values[0][f"{meta['field']}_c"] * 1.8 + 32
            assert "°F" in t.prompt and meta["unit"] == "F"
        elif meta["kind"] == "compare":
            expected = values[0]["high_c"] - values[1]["high_c"]
        else:
            assert answer == {"unavailable": meta["cities"][0]} and meta["cities"][0] in UNKNOWN_CITIES
            assert meta["lookups"][0]["failures"][-1] == PERMANENT
            continue
        assert answer == pytest.approx(expected, abs=1e-6), t


def test_splits_never_share_a_date():
    dates = {split: {t.meta_value()["date"] for t in generate_tasks(300, seed=0, split=split)}
             for split in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not dates[a] & dates[b], (a, b)
    with pytest.raises(ValueError, match="unknown split 'dev'; known: train, val, test"):
        generate_tasks(1, seed=0, split="dev")


# ---- the scripted expert ----


@pytest.mark.parametrize("split", ["train", "test"])
def test_scripted_expert_through_the_env_is_accepted(split):
    for t in generate_tasks(50, seed=5, split=split):
        env = WeatherEnv()
        env.reset(t)
        *tool_steps, final = scripted_expert(t)
        attempts: dict[str, list] = {}
        for assistant, tool in zip(tool_steps[::2], tool_steps[1::2]):
            calls, errors = parse_tool_calls(assistant["content"])
            assert errors == [] and len(calls) == 1 and calls[0].strict, assistant
            step = env.step(calls[0])
            assert step.observation == tool["content"] and tool["role"] == "tool"
            if calls[0].name == "get_weather":
                attempts.setdefault(calls[0].arguments["city"], []).append(failure_of(step.observation))
        first = tool_steps[0]["content"]
        assert first.startswith("<tool_call>\n{") and first.endswith("}\n</tool_call>")  # what SFT's _mistake reads
        for city, kinds in attempts.items():
            assert len(kinds) <= 1 + MAX_RETRIES and all(k in TRANSIENT for k in kinds[:-1])  # retried transients only
            assert kinds[-1] in (None, PERMANENT)  # ended with the data or a 404 it did not retry
        assert final["role"] == "assistant" and env.step(final["content"]).reward == 1.0, (t.prompt, final)


def test_scripted_expert_needs_the_kind():
    with pytest.raises(ValueError, match="has meta.kind 'forecast', not one of lookup, convert"):
        scripted_expert(task(13.9, kind="forecast"))


def test_sft_expert_demos_work_for_weather(monkeypatch):
    """The lines the integrator adds (ENVS, EXPERTS) are enough for SFT, recovery demos included: a mistaken first
    call is an argument or parse error, so it consumes none of the schedule's attempts."""
    from learners import sft_data

    monkeypatch.setitem(envs.ENVS, "weather", WeatherEnv)
    monkeypatch.setitem(sft_data.EXPERTS, "weather", (generate_tasks, scripted_expert))
    demos = sft_data.expert_demos("weather", 30, 0, recovery_fraction=1.0)
    assert len(demos) == 30
    for demo in demos:
        assert demo[2]["weight"] == 0 and demo[3]["content"].startswith("error: ")  # every demo opens with a mistake
        assert [tool["function"]["name"] for tool in demo[0]["tools"]] == ["get_weather", "calculator"]
