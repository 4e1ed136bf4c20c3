"""The grounding and retry scorers: on trajectories played through the real search and weather envs, the orderings
they exist for, and their registration in ``rewards.SCORERS`` / ``combine`` as the integrator wires them."""

from __future__ import annotations

import doctest
import json

import pytest

from actors.trajectory import ToolCallRecord, Trajectory, check_invariants
from envs.search_env import SearchEnv
from envs.search_tasks import generate_tasks as search_tasks
from envs.search_tasks import scripted_expert as search_expert
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls
from envs.weather_env import WeatherEnv
from envs.weather_tasks import generate_tasks as weather_tasks
from envs.weather_tasks import scripted_expert as weather_expert
from rewards import RewardConfig, combine, grounding, retry
from rewards._examples import example_task, example_trajectory
from rewards.grounding import grounded
from rewards.retry import retry_quality

pytestmark = pytest.mark.timeout(60)

OSLO = {"city": "Oslo", "date": "2025-05-02"}
NUUK = {"city": "Nuuk", "date": "2025-05-02"}


def play(env, task: Task, actions: list[ToolCall | str]) -> Trajectory:
    """A trajectory shaped as the runner writes one, from actions stepped through a fresh ``env`` (real results)."""
    env.reset(task)
    calls, answer = [], None
    for action in actions:
        if isinstance(action, str):
            answer = action
            break
        step = env.step(action)
        record = ToolCallRecord(0, action.name, json.dumps(action.arguments), bool(step.info["ok"]),
                                step.info.get("error"))
        calls.append((record, step.observation))
    return example_trajectory(calls=calls, final_answer=answer, task_id=task.task_id, env=task.env)


def expert_actions(steps: list[dict]) -> list[ToolCall | str]:
    actions: list[ToolCall | str] = []
    for message in steps:
        if message["role"] == "assistant":
            calls, _ = parse_tool_calls(message["content"])
            actions.append(calls[0] if calls else message["content"])
    return actions


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(name, arguments, raw="", strict=True)


def weather_task(failures: list[str], city: str = "Oslo") -> Task:
    meta = {"kind": "lookup", "seed": 7, "unit": "C", "field": "high", "cities": [city], "date": "2025-05-02",
            "lookups": [{"city": city, "date": "2025-05-02", "failures": failures}]}
    answer = {"unavailable": city} if city == "Nuuk" else 13.9
    return Task("w", "weather", f"What's the high in {city} on 2025-05-02 in °C?", json.dumps(answer),
                json.dumps(meta))


def test_doctests():
    for module in (grounding, retry):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---- grounded ----


def test_grounded_is_one_exactly_when_the_gold_page_was_retrieved():
    task = search_tasks(1, seed=0, split="test")[0]
    gold = task.meta_value()["doc_id"]
    other = next(d for d in SearchEnv().corpus.documents if d != gold)
    answer = search_expert(task)[-1]["content"]
    cases = {
        "expert": (expert_actions(search_expert(task)), 1.0),
        "opened the gold page": ([call("open", doc_id=gold), answer], 1.0),
        "answered from memory": ([answer], 0.0),
        "retrieved another page": ([call("open", doc_id=other), answer], 0.0),
        "nothing found": ([call("search", query="zzzqqq"), answer], 0.0),
        "a failed open of the gold id": ([call("open", doc_id=gold + "x"), answer], 0.0),
        "search with no answer": ([call("search", query=task.meta_value()["question"])], 1.0),  # retrieval, not answer
    }
    for name, (actions, expected) in cases.items():
        trajectory = play(SearchEnv(), task, actions)
        assert check_invariants(trajectory) == [] and grounded(trajectory, task) == expected, name


def test_grounded_on_fifty_expert_episodes_and_on_other_envs():
    for task in search_tasks(50, seed=1, split="train"):
        assert grounded(play(SearchEnv(), task, expert_actions(search_expert(task))), task) == 1.0
    calc = example_trajectory(calls=[], final_answer="391")
    assert grounded(calc, example_task()) == 0.0  # no gold page: a constant, moves no advantage


# ---- retry_quality ----


def score(failures: list[str], actions: list[ToolCall | str], city: str = "Oslo") -> float:
    return retry_quality(play(WeatherEnv(), weather_task(failures, city), actions), weather_task(failures, city))


def test_retry_then_success_beats_giving_up_after_a_transient_error():
    for kind in ("timeout", "http_500", "malformed"):
        retried = score([kind], [call("get_weather", **OSLO), call("get_weather", **OSLO), "13.9 °C"])
        gave_up = score([kind], [call("get_weather", **OSLO), "Sorry, the service is down."])
        assert (retried, gave_up) == (1.0, -1.0), kind


def test_polite_stop_beats_retrying_a_permanent_error():
    polite = score(["unknown_city"], [call("get_weather", **NUUK), "I have no data for Nuuk."], city="Nuuk")
    once = score(["unknown_city"], [call("get_weather", **NUUK)] * 2 + ["No data for Nuuk."], city="Nuuk")
    twice = score(["unknown_city"], [call("get_weather", **NUUK)] * 3 + ["No data for Nuuk."], city="Nuuk")
    assert polite == 1.0 and once == 0.0 and twice == pytest.approx(-1 / 3)
    assert twice < once < polite
    # transient failures before the 404: retrying those is right, stopping at the 404 is right
    assert score(["timeout", "unknown_city"], [call("get_weather", **NUUK)] * 2 + ["No data."], city="Nuuk") == 1.0


def test_more_than_three_retries_of_one_call_are_penalised():
    def retries(n: int) -> float:  # n retries after n transient failures, then the data
        return score(["timeout"] * 3, [call("get_weather", **OSLO)] * (n + 1) + ["13.9 °C"])

    assert retries(3) == 1.0  # the schedule's three failures, retried three times
    assert score(["timeout"] * 3, [call("get_weather", **OSLO)] * 6 + ["13.9 °C"]) == pytest.approx((3 - 2) / 5)
    assert score(["timeout"] * 3, [call("get_weather", **OSLO)] * 3 + ["gave up"]) < retries(3)
    trajectory = example_trajectory(calls=[(ToolCallRecord(0, "get_weather", json.dumps(OSLO), False),
                                            "error: timeout after 2.0 s, try again")] * 5, final_answer="gave up")
    assert retry_quality(trajectory, weather_task([])) == pytest.approx((3 - 1 + 1) / 5)  # 4th retry -1; stop +1


def test_what_is_not_a_decision_point():
    assert score([], [call("get_weather", **OSLO), "13.9 °C"]) == 0.0  # nothing failed
    assert score([], [call("get_weather", city="Oslo", date="May 2"), call("get_weather", **OSLO), "x"]) == 0.0
    # a typo's 404 is not retried (+1); the fixed city is a new call, retried after its timeout (+1)
    assert score(["timeout"], [call("get_weather", city="Olso", date="2025-05-02"), call("get_weather", **OSLO),
                               call("get_weather", **OSLO), "13.9 °C"]) == 1.0
    assert score([], [call("get_weather", **OSLO)] * 3 + ["13.9 °C"]) == 0.0  # repeats after success: not retries
    runner_timeout = (ToolCallRecord(0, "get_weather", json.dumps(OSLO), False),
                      "error: tool 'get_weather' timed out after 5s")  # the runner's own timeout is transient too
    assert retry_quality(example_trajectory(calls=[runner_timeout], final_answer="x"), weather_task([])) == -1.0
    assert retry_quality(example_trajectory(calls=[], final_answer="391"), example_task()) == 0.0


def test_the_scripted_expert_retries_well_on_fifty_tasks():
    for task in weather_tasks(50, seed=2, split="test"):
        value = retry_quality(play(WeatherEnv(), task, expert_actions(weather_expert(task))), task)
        failed = any(x["failures"] for x in task.meta_value()["lookups"])
        assert value == (1.0 if failed else 0.0), task.task_id


# ---- registration, as the integrator wires it ----


def test_registered_scorers_combine(monkeypatch):
    from envs import search_env, weather_env
    from rewards import scorers, verifiers

    monkeypatch.setitem(verifiers.VERIFIERS, "search", search_env.verify)
    monkeypatch.setitem(verifiers.VERIFIERS, "weather", weather_env.verify)
    monkeypatch.setitem(scorers.SCORERS, "grounded", grounded)
    monkeypatch.setitem(scorers.SCORERS, "retry", retry_quality)
    cfg = RewardConfig(weights={"grounded": 0.2, "retry": 0.15})
    assert cfg.validate() == []
    search = search_tasks(1, seed=0)[0]
    total, parts = combine(play(SearchEnv(), search, expert_actions(search_expert(search))), search, cfg)
    assert (parts["outcome"], parts["grounded"], parts["retry"]) == (1.0, 1.0, 0.0)
    task = next(t for t in weather_tasks(40, seed=0) if any(x["failures"] for x in t.meta_value()["lookups"]))
    total, parts = combine(play(WeatherEnv(), task, expert_actions(weather_expert(task))), task, cfg)
    assert parts["retry"] == 1.0 and parts["grounded"] == 0.0 and parts["outcome"] == 1.0
    assert "retry_error" not in parts and "grounded_error" not in parts
    assert total == pytest.approx(sum(cfg.weights[k] * parts[k] for k in cfg.weights))
