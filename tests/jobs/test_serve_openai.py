"""The OpenAI <-> chat-contract mapping of the serve job, without an engine: requests render to the tokens the policy
was trained on, replies parse into OpenAI tool calls, bad requests name the bad field, bad configs name the fix."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from envs.calculator import CALCULATOR_TOOL, SYSTEM_PROMPT, CalculatorEnv, generate_tasks, scripted_expert
from envs.chat import render
from jobs.config_loader import ConfigError, load_config, undocumented
from jobs.serve_config import ServeConfig
from jobs.serve_openai import ChatRequest, choice, to_messages, validation_message

pytestmark = pytest.mark.timeout(60)

TASK = generate_tasks(1, seed=3, split="test")[0]


def _request(messages, **extra) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": messages, **extra})


def _env_prompt() -> list[dict]:
    """The episode's first messages exactly as the rollout runner builds them (actors/episode.py ``_start``)."""
    messages, tools = CalculatorEnv().reset(TASK)
    messages = [dict(m) for m in messages]
    messages[0]["tools"] = [t.schema() for t in tools]
    return messages


def test_a_calculator_request_renders_the_rollout_prompt_exactly():
    req = _request([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": TASK.prompt}],
                   tools=[CALCULATOR_TOOL.schema()])
    served = render(to_messages(req, "unused"), add_generation_prompt=True)
    assert served == render(_env_prompt(), add_generation_prompt=True)
    assert '"name": "calculator"' in served


def test_tool_calls_and_tool_results_render_like_the_sft_demonstrations():
    demo = scripted_expert(TASK)  # assistant call, tool result, final answer
    call = json.loads(demo[0]["content"].split("\n")[1])
    openai_turns = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": demo[1]["content"]},
        {"role": "assistant", "content": [{"type": "text", "text": demo[2]["content"]}]},
    ]
    req = _request([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": TASK.prompt},
                    *openai_turns], tools=[CALCULATOR_TOOL.schema()])
    assert render(to_messages(req, "unused")) == render(_env_prompt() + demo)


def test_tools_without_a_system_message_get_the_default_one_and_developer_is_system():
    req = _request([{"role": "user", "content": "2+2?"}], tools=[CALCULATOR_TOOL.schema()])
    messages = to_messages(req, "Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief.", "tools": [CALCULATOR_TOOL.schema()]}
    req = _request([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert to_messages(req, "unused")[0] == {"role": "system", "content": "Be brief."}


def test_a_tool_call_reply_becomes_openai_tool_calls():
    text = 'Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call'
    c = choice(0, text, finish_reason="stop", stop_reason="</tool_call", parse_tools=True, user_stops=[])
    assert c["finish_reason"] == "tool_calls" and c["message"]["content"] == "Let me compute."
    (call,) = c["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "17 * 23"}


def test_replies_without_a_valid_call_are_plain_text():
    broken = '<tool_call>\n{"name": "calculator", "arguments": \n</tool_call'
    c = choice(0, broken, finish_reason="stop", stop_reason="</tool_call", parse_tools=True, user_stops=[])
    assert c["finish_reason"] == "stop" and "tool_calls" not in c["message"]
    assert c["message"]["content"] == broken + ">"
    cut = choice(0, "The answer is", finish_reason="length", stop_reason=None, parse_tools=True, user_stops=[])
    assert cut["finish_reason"] == "length" and cut["message"]["content"] == "The answer is"
    stopped = choice(0, "one two END", finish_reason="stop", stop_reason="END", parse_tools=True, user_stops=["END"])
    assert stopped["message"]["content"] == "one two "
    call = '<tool_call>\n{"name": "calculator", "arguments": {}}\n</tool_call>'
    raw = choice(0, call, finish_reason="stop", stop_reason=None, parse_tools=False, user_stops=[])
    assert raw["message"]["content"] == call and raw["finish_reason"] == "stop"


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("body, field, words", [
    ({"model": "m"}, "messages", "Field required"),
    ({"model": "m", "messages": []}, "messages", "at least 1"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'robot'"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages.0", "needs content"),
    ({"model": "m", "messages": [USER], "tools": [{"type": "function", "function": {"description": "d"}}]},
     "tools.0.function.name", "Field required"),
    ({"model": "m", "messages": [USER], "tools": [{"type": "retrieval"}]}, "tools.0.type", "'function'"),
    ({"model": "m", "messages": [USER], "tools": [CALCULATOR_TOOL.schema()] * 2}, "tools", "more than once"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "messages.0.tool_calls.0.function.arguments", "JSON object"),
    ({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     "messages.0", "only assistant"),
    ({"model": "m", "messages": [USER], "stream": True}, "stream", "not supported"),
    ({"model": "m", "messages": [USER], "tool_choice": "required"}, "tool_choice", "Fix: use 'auto'"),
    ({"model": "m", "messages": [USER], "temperature": 5}, "temperature", "less than or equal to 2"),
])
def test_bad_requests_name_the_field_and_the_problem(body, field, words):
    with pytest.raises(ValidationError) as err:
        ChatRequest.model_validate(body)
    message, param = validation_message(err.value.errors())
    assert param == field and f"{field}: " in message and words in message and "Fix:" in message, message


def test_unknown_fields_are_ignored_like_openai_clients_expect():
    req = _request([USER], user="someone", parallel_tool_calls=False)
    assert req.parses_tools() is False and req.requested_max_tokens() is None


def test_serve_config_is_documented_and_bad_settings_name_their_fix(tmp_path):
    assert undocumented(ServeConfig) == []
    with pytest.raises(ConfigError) as err:
        load_config(ServeConfig, None, [f"adapter={tmp_path}", "deployment.min_replicas=3",
                                        "deployment.max_replicas=2", "engine.dtype=fp8"])
    text = str(err.value)
    assert "3 problems" in text and "adapter: " in text and "holds no adapter" in text
    assert "deployment.min_replicas" in text and "engine.dtype" in text and text.count("Fix:") == 3


def test_app_builder_checks_its_args_before_deploying(tmp_path):
    from ray.serve import Application

    from jobs.serve import app

    assert isinstance(app({"config": "configs/serve.yaml"}), Application)
    with pytest.raises(ConfigError, match="unknown \\['replicas'\\]"):
        app({"replicas": 2})
    with pytest.raises(ConfigError, match="does not exist. Fix"):
        app({"adapter": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="list of 'key.sub=value'"):
        app({"overrides": "deployment.max_replicas=4"})
