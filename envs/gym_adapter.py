"""Any of our text envs as a ``gymnasium.Env``, so RLlib or another framework can drive it with raw model text.

An action is the model's whole turn as text. It is read exactly as the episode runner (``actors.episode``) reads
it: ``parse_tool_calls``; each call runs its tool and each unreadable call becomes an ``error: ...`` tool message;
a turn with neither is the final answer, scored by the env's verifier (reward 1.0 or 0.0; shaping lives in
``rewards/`` and needs a whole trajectory). The observation is the conversation rendered with the project's chat
template, ending with the assistant header while the episode runs: exactly the prompt the policy continues from.
``info`` holds the message list and the tools' JSON schemas for frameworks that render themselves.

Tasks come per episode: ``reset(options={"task": task})``, or, for frameworks that call ``reset()`` without options
(RLlib's env runners), drawn with the env's seeded generator from ``tasks=`` given at construction.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import gymnasium
from gymnasium import spaces

from envs import ENVS, make_env
from envs.base import StepResult
from envs.chat import render
from envs.tasks import Task
from envs.tool_calls import parse_tool_calls

__all__ = ["TextEnv", "register", "env_id", "MAX_OBSERVATION_CHARS", "MAX_ACTION_CHARS", "MAX_CALLS_PER_TURN"]

MAX_OBSERVATION_CHARS = 1_000_000  # a whole rendered episode; ~250k tokens, beyond any context we serve
MAX_ACTION_CHARS = 100_000  # one model turn; ~25k tokens, beyond any max_tokens_per_turn we use
MAX_CALLS_PER_TURN = 4  # the episode runner's limit (actors.episode); the rest get an error observation
ID_PREFIX = "agentrl/"


@lru_cache(maxsize=1)
def _charset() -> str:
    """Every character of the Basic Multilingual Plane but the surrogates: whatever a tokenizer decodes to, bar emoji
    and other astral characters (a space over all of Unicode costs seconds and ~1 GB to build)."""
    return "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


def env_id(name: str) -> str:
    """The gymnasium id of one of our envs: ``agentrl/<name>-v0``."""
    return f"{ID_PREFIX}{name}-v0"


class TextEnv(gymnasium.Env):
    """One of ``envs.ENVS`` behind the gymnasium API; one episode at a time, like the env it wraps."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, env_name: str, *, tasks: Sequence[Task] | None = None, max_turns: int = 4,
                 render_mode: str | None = None) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}. Fix: pass the number of model turns allowed")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode {render_mode!r} is not supported. Fix: use None or 'ansi'")
        self._env = make_env(env_name)  # UnknownEnvError lists the known names
        self.env_name, self.max_turns, self.render_mode = env_name, max_turns, render_mode
        self.tasks = list(tasks or [])
        wrong = [t.task_id for t in self.tasks if t.env != env_name]
        if wrong:
            raise ValueError(f"tasks {wrong[:5]} are for other envs, not {env_name!r}. "
                             f"Fix: pass only tasks whose env is {env_name!r}")
        self.observation_space = spaces.Text(MAX_OBSERVATION_CHARS, min_length=0, charset=_charset())
        self.action_space = spaces.Text(MAX_ACTION_CHARS, min_length=0, charset=_charset())
        self._task: Task | None = None
        self._messages: list[dict] = []
        self._tools: list[dict] = []
        self._turns = 0
        self._over = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start an episode on ``options["task"]`` (else a task drawn from ``tasks``); return (prompt text, info)."""
        super().reset(seed=seed)
        task = (options or {}).get("task")
        if task is None:
            if not self.tasks:
                raise ValueError(f"reset() needs a task: {self.env_name!r} was given none. Fix: call "
                                 "env.reset(options={'task': task}), or construct the env with tasks=[...], e.g. "
                                 f"gymnasium.make({env_id(self.env_name)!r}, tasks=TASK_GENERATORS"
                                 f"[{self.env_name!r}](100, seed=0))")
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        if not isinstance(task, Task):
            raise TypeError(f"options['task'] must be an envs.Task, got {type(task).__name__}. "
                            "Fix: build one with envs.Task(...) or read them with envs.read_tasks")
        if task.env != self.env_name:
            raise ValueError(f"task {task.task_id!r} is for env {task.env!r}, not {self.env_name!r}. "
                             f"Fix: use {env_id(task.env)!r} for it")
        messages, tools = self._env.reset(task)
        self._task, self._turns, self._over = task, 0, False
        self._tools = [t.schema() for t in tools]
        self._messages = [dict(m) for m in messages]
        system = next((m for m in self._messages if m.get("role") == "system"), None)
        if system is not None:
            system["tools"] = self._tools  # where the runner puts them: the same rendering, the same tokens
        return self._observation(), self._info()

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        """Play one model turn: run its tool calls, or score it as the final answer."""
        if self._task is None or self._over:
            raise RuntimeError("TextEnv.step called before reset() or after the episode ended. Fix: call reset()")
        if not isinstance(action, str):
            raise TypeError(f"action must be the model's text (str), got {type(action).__name__}")
        self._turns += 1
        self._messages.append({"role": "assistant", "content": action})
        calls, errors = parse_tool_calls(action)
        results: list[dict] = []
        for err in errors:
            self._messages.append({"role": "tool", "content": f"error: {err.message}"})
            results.append({"name": "", "ok": False, "error": err.message})
        reward, terminated, extra = 0.0, False, {}
        if calls or errors:
            for i, call in enumerate(calls):
                result = self._run(call) if i < MAX_CALLS_PER_TURN else _too_many()
                self._messages.append({"role": "tool", "content": result.observation or ""})
                self._messages.extend(dict(m) for m in result.info.get("messages", []))  # a hand-off, as the runner
                results.append({"name": call.name, **{k: v for k, v in result.info.items() if k != "messages"}})
                if result.done:  # an env may end the episode from a tool (a "submit" tool)
                    reward, terminated = result.reward, True
                    break
        else:
            result = self._env.step(action)
            reward, terminated, extra = result.reward, True, dict(result.info)
        truncated = not terminated and self._turns >= self.max_turns
        self._over = terminated or truncated
        return self._observation(), float(reward), terminated, truncated, self._info(tool_calls=results, **extra)

    def render(self) -> str | None:
        """The conversation so far as text (``render_mode="ansi"``)."""
        return self._observation() if self.render_mode == "ansi" else None

    def _run(self, call) -> StepResult:
        try:
            return self._env.step(call)
        except Exception as exc:  # envs should not raise; as in the runner, the model sees it and the episode goes on
            return StepResult(f"error: {type(exc).__name__}: {exc}", 0.0, False,
                              {"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def _observation(self) -> str:
        return render(self._messages, add_generation_prompt=not self._over)

    def _info(self, **extra: Any) -> dict:
        return {"task_id": self._task.task_id if self._task else None, "turn": self._turns,
                "messages": copy.deepcopy(self._messages), "tools": copy.deepcopy(self._tools), **extra}


def _too_many() -> StepResult:
    return StepResult(f"error: at most {MAX_CALLS_PER_TURN} tool calls per turn; this one was not run", 0.0, False,
                      {"ok": False, "error": "too many calls", "latency_s": 0.0})


def register() -> list[str]:
    """Register ``agentrl/<name>-v0`` with gymnasium for every env in ``envs.ENVS``; return the ids. Idempotent.

    Call it before ``gymnasium.make`` (it is not run at import, so importing ``envs`` stays free of gymnasium):

    >>> ids = register()
    >>> "agentrl/calculator-v0" in ids and "agentrl/calculator-v0" in gymnasium.registry
    True
    """
    ids = []
    for name in ENVS:
        gid = env_id(name)
        if gid not in gymnasium.registry:
            gymnasium.register(id=gid, entry_point=f"{__name__}:TextEnv", kwargs={"env_name": name})
        ids.append(gid)
    return ids
