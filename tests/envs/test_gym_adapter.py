"""The gymnasium adapter on the real calculator env: make, episodes, rewards, errors, truncation, the checker."""

from __future__ import annotations

import doctest
import json
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from envs import ENVS, UnknownEnvError
from envs.calculator import generate_tasks
from envs.chat import render
from envs.gym_adapter import MAX_CALLS_PER_TURN, TextEnv, register
from envs.tasks import Task

pytestmark = pytest.mark.timeout(60)

TASK = Task("t1", "calculator", "What is 347 * 29?", "10063", json.dumps({"expression": "347 * 29"}))
CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "347 * 29"}}\n</tool_call>'


@pytest.fixture
def env():
    register()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive checker's notes (no render_fps) are not the subject here
        made = gymnasium.make("agentrl/calculator-v0")
        yield made
    made.close()


def test_register_covers_every_env_and_is_idempotent():
    ids = register()
    assert ids == [f"agentrl/{name}-v0" for name in ENVS] == register()
    assert all(i in gymnasium.registry for i in ids)


def test_reset_gives_the_rendered_prompt_and_the_tools(env):
    obs, info = env.reset(options={"task": TASK})
    messages = info["messages"]
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == TASK.prompt
    assert obs == render(messages, add_generation_prompt=True) and obs.endswith("<|im_start|>assistant\n")
    assert [t["function"]["name"] for t in info["tools"]] == ["calculator"] and '"calculator"' in obs
    assert info["task_id"] == "t1" and info["turn"] == 0
    assert env.observation_space.contains(obs)


def test_a_tool_call_then_the_right_answer_earns_1(env):
    env.reset(options={"task": TASK})
    obs, reward, terminated, truncated, info = env.step(CALL)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["tool_calls"][0]["ok"] is True and info["messages"][-1] == {"role": "tool", "content": "10063"}
    assert "<tool_response>\n10063\n</tool_response>" in obs and obs.endswith("<|im_start|>assistant\n")
    obs, reward, terminated, truncated, info = env.step("347 * 29 = 10063.")
    assert (reward, terminated, truncated, info["correct"]) == (1.0, True, False, True)
    assert obs.endswith("347 * 29 = 10063.<|im_end|>\n")  # no new header: the episode is over
    with pytest.raises(RuntimeError, match="after the episode ended. Fix: call reset"):
        env.step("again")


def test_a_wrong_answer_earns_0(env):
    env.reset(options={"task": TASK})
    _, reward, terminated, truncated, info = env.step("It is 10062.")
    assert (reward, terminated, truncated, info["correct"]) == (0.0, True, False, False)


def test_a_malformed_call_is_an_observation_not_the_answer(env):
    env.reset(options={"task": TASK})
    obs, reward, terminated, truncated, info = env.step('<tool_call>{"name": "calculator", "arguments": {</tool_call>')
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["tool_calls"][0]["ok"] is False and info["messages"][-1]["content"].startswith("error: malformed JSON")
    calls = "".join([CALL] * (MAX_CALLS_PER_TURN + 1))
    _, _, _, _, info = env.step(calls)
    assert [c["ok"] for c in info["tool_calls"]] == [True] * MAX_CALLS_PER_TURN + [False]
    assert info["messages"][-1]["content"].startswith(f"error: at most {MAX_CALLS_PER_TURN} tool calls per turn")


def test_missing_task_errors_with_the_fix(env):
    with pytest.raises(ValueError, match=r"reset\(\) needs a task.*Fix: call env.reset\(options=\{'task': task\}\)"):
        env.reset()
    with pytest.raises(TypeError, match="options\\['task'\\] must be an envs.Task, got dict"):
        env.reset(options={"task": {"prompt": "2+2"}})
    with pytest.raises(ValueError, match="is for env 'python', not 'calculator'. Fix: use 'agentrl/python-v0'"):
        env.reset(options={"task": Task("p", "python", "q", "1")})
    with pytest.raises(UnknownEnvError, match="unknown env 'chess'"):
        TextEnv("chess")


def test_truncation_at_max_turns():
    register()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gymnasium.make("agentrl/calculator-v0", max_turns=2)
    env.reset(options={"task": TASK})
    assert env.step(CALL)[2:4] == (False, False)
    obs, reward, terminated, truncated, _ = env.step(CALL)
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert not obs.endswith("<|im_start|>assistant\n")
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("10063")
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        TextEnv("calculator", max_turns=0)


def test_tasks_given_at_construction_are_drawn_by_seed():
    tasks = generate_tasks(20, seed=0)
    env = TextEnv("calculator", tasks=tasks)
    first = [env.reset(seed=s)[1]["task_id"] for s in range(10)]
    assert first == [env.reset(seed=s)[1]["task_id"] for s in range(10)] and len(set(first)) > 1
    assert env.reset(options={"task": TASK})[1]["task_id"] == "t1"  # an explicit task wins
    with pytest.raises(ValueError, match="are for other envs"):
        TextEnv("python", tasks=tasks)


def test_gymnasium_check_env():
    # check_env calls reset() and reset(options={}) without a task, so it applies only to an env built with tasks=.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no render_fps" and similar notes; failures raise
        check_env(TextEnv("calculator", tasks=generate_tasks(5, seed=0)), skip_render_check=True)
        register()
        made = gymnasium.make("agentrl/calculator-v0", tasks=generate_tasks(5, seed=0), render_mode="ansi")
        check_env(made.unwrapped)  # with a spec: also renders, re-makes and closes through it
    assert made.unwrapped.render().startswith("<|im_start|>system\n")


def test_doctests():
    from envs import gym_adapter

    result = doctest.testmod(gym_adapter)
    assert result.failed == 0 and result.attempted > 0


def test_a_hand_off_adds_the_next_agents_system_prompt():
    """support_desk: triage hands the case to billing; the billing prompt (with its tools) follows the tool result."""
    from envs import support_tasks
    from envs.support_desk import system_message

    task = next(t for t in support_tasks.generate_tasks(30, seed=0) if t.meta_value()["kind"] == "handoff")
    turns = [m["content"] for m in support_tasks.scripted_expert(task) if m["role"] == "assistant"]
    env = TextEnv("support_desk", max_turns=8)
    env.reset(options={"task": task})
    for text in turns[:-1]:
        _, _, terminated, _, info = env.step(text)
        assert not terminated
    assert system_message("billing") in info["messages"]
    _, reward, terminated, _, _ = env.step(turns[-1])
    assert terminated and reward == 1.0
