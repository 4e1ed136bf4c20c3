from __future__ import annotations

import json
import re

import pytest

from envs import ENVS, UnknownEnvError, make_env
from envs.base import Tool, ToolError, call_tool
from envs.calculator import CALCULATOR_TOOL, CalculatorEnv, calculate, generate_tasks, scripted_expert, verify
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

TOOLS = {"calculator": CALCULATOR_TOOL}


def task(answer: str = "10063", expression: str = "347 * 29") -> Task:
    return Task("t", "calculator", f"What is {expression}?", answer, json.dumps({"expression": expression}))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", "391"),
        ("(347 + 589) * 12", "11232"),
        ("25 / 2", "12.5"),
        ("1/3", "0.333333"),
        ("10063 / 29", "347"),
        ("-2 ** 2 + 7 // 2 % 5", "-1"),
        ("sqrt(16) + abs(-3) + round(2.6)", "10"),
        ("round(3.14159, 2)", "3.14"),
        ("17 \u00d7 23 =", "391"),
        ("2 ** -1", "0.5"),
    ],
)
def test_calculator_results(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x + 1", "unknown name 'x'"),
        ("(1).__class__", "attribute access"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "attribute access (.system)"),
        ("2 ** 1000", "exponent 1000 too large"),
        ("10 ** 20 * 10 ** 20", "result too large"),
        ("1 / 0", "division by zero"),
        ("5 // 0", "division by zero"),
        ("'a' * 3", "unsupported constant 'a'"),
        ("[1, 2]", "unsupported construct: List"),
        ("2 ^ 3", "use ** for powers"),
        ("1" * 501, "expression too long"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "invalid expression"),
        ("", "empty expression"),
    ],
)
def test_calculator_rejects(expression, message):
    with pytest.raises(ToolError, match=re.escape(message)):
        calculate(expression)


def test_generate_tasks_is_deterministic_and_answers_match_the_tool():
    tasks = generate_tasks(200, seed=7)
    assert tasks == generate_tasks(200, seed=7)
    assert tasks != generate_tasks(200, seed=8)
    assert len({t.task_id for t in tasks}) == 200 and tasks[3].task_id == "calc-train-7-3"
    for t in tasks:
        meta = t.meta_value()
        assert meta["split"] == "train" and meta["difficulty"] in (1, 2, 3)
        assert t.answer_value() == json.loads(calculate(meta["expression"]))
        assert verify(t, scripted_expert(t)[-1]["content"])


def test_splits_never_share_expressions():
    expressions = {
        split: {t.meta_value()["expression"] for t in generate_tasks(300, seed=0, split=split)}
        for split in ("train", "val", "test")
    }
    assert not expressions["train"] & expressions["val"]
    assert not expressions["train"] & expressions["test"]
    assert not expressions["val"] & expressions["test"]
    with pytest.raises(ValueError, match="unknown split"):
        generate_tasks(1, seed=0, split="dev")


@pytest.mark.parametrize(
    ("answer", "text", "ok"),
    [
        ("10063", "347 * 29 = 10063.", True),
        ("10063", "The total is 10,063 pencils.", True),
        ("1234", r"First 5, then 7, so \boxed{1,234}", True),
        ("-12", "It comes to -12", True),
        ("12.5", "Answer: 12.5", True),
        ("10063", "347 * 29 = 10063, not 10062", False),
        ("10063", "I think it is 10062.", False),
        ("10063", "no idea", False),
    ],
)
def test_verify(answer, text, ok):
    assert verify(task(answer), text) is ok


def test_env_reset_and_step():
    env = make_env("calculator")
    t = task()
    messages, tools = env.reset(t)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == t.prompt
    assert "calculator" in messages[0]["content"] and [tool.name for tool in tools] == ["calculator"]
    assert tools[0].schema()["function"]["parameters"]["required"] == ["expression"]
    step = env.step(ToolCall("calculator", {"expression": "347 * 29"}, raw="", strict=True))
    assert (step.observation, step.reward, step.done, step.info["ok"]) == ("10063", 0.0, False, True)
    assert step.info["error"] is None and step.info["latency_s"] >= 0
    bad = env.step(ToolCall("calculator", {"expression": "1/0"}, raw="", strict=True))
    assert bad.observation == "error: division by zero" and not bad.done and bad.info["ok"] is False
    final = env.step("347 * 29 = 10063.")
    assert (final.observation, final.reward, final.done, final.info) == (None, 1.0, True, {"correct": True})
    env.reset(t)
    assert env.step("It is 10062.").reward == 0.0


def test_make_env_unknown_lists_known_names():
    assert {"calculator", "python"} <= set(ENVS)
    with pytest.raises(UnknownEnvError, match="unknown env 'nope'; known envs: calculator, "):
        make_env("nope")
    assert isinstance(UnknownEnvError("x"), KeyError)


def test_call_tool_errors():
    unknown = call_tool(TOOLS, ToolCall("search", {}, raw="", strict=True))
    assert unknown.observation == "error: unknown tool 'search'; available: calculator"
    missing = call_tool(TOOLS, ToolCall("calculator", {}, raw="", strict=True))
    assert missing.observation.startswith("error: invalid arguments for 'calculator': missing required 'expression'")
    extra = call_tool(TOOLS, ToolCall("calculator", {"expression": "1", "x": 2}, raw="", strict=True))
    assert "unexpected 'x'" in extra.observation and extra.info["ok"] is False
    wrong = call_tool(TOOLS, ToolCall("calculator", {"expression": ["1"]}, raw="", strict=True))
    assert "'expression' must be a string, got array" in wrong.observation


def test_call_tool_coerces_a_number_to_string():
    step = call_tool(TOOLS, ToolCall("calculator", {"expression": 391}, raw="", strict=True))
    assert step.observation == "391" and step.info["coerced"] is True and step.info["ok"] is True
    assert "coerced" not in call_tool(TOOLS, ToolCall("calculator", {"expression": "1"}, raw="", strict=True)).info


def test_call_tool_never_propagates_tool_bugs():
    def broken(**_: object) -> str:
        raise KeyError("boom")

    tools = {"b": Tool("b", "always fails", {"type": "object"}, broken)}
    step = call_tool(tools, ToolCall("b", {}, raw="", strict=True))
    assert step.observation == "error: KeyError: 'boom'" and step.info["ok"] is False


def test_scripted_expert_call_parses_strictly_and_answer_verifies():
    t = generate_tasks(1, seed=3)[0]
    call_msg, tool_msg, answer_msg = scripted_expert(t)
    calls, errors = parse_tool_calls(call_msg["content"])
    assert errors == [] and len(calls) == 1 and calls[0].strict
    assert call_msg["content"].startswith('<tool_call>\n{"name": "calculator", "arguments": {"expression": "')
    assert call_msg["content"].endswith('"}}\n</tool_call>')
    env = CalculatorEnv()
    env.reset(t)
    assert env.step(calls[0]).observation == tool_msg["content"] and tool_msg["role"] == "tool"
    assert answer_msg["role"] == "assistant" and env.step(answer_msg["content"]).reward == 1.0
