"""The episode shape five envs share: any number of tool calls, then one text answer that the env's verifier scores.

calculator, python, datetime, search and weather differ only in their system prompt, their tools (fixed, or built
per task: a task's clock, a task's weather service) and their verifier; support_desk, whose outcome is the database
state and whose episode may hand off between agents, has its own class.
"""

from __future__ import annotations

from envs.base import StepResult, Tool, call_tool
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

__all__ = ["AnswerEnv", "expert_transcript"]


class AnswerEnv:
    """One episode at a time: ``reset(task)`` gives the system + user messages and the tools; a ``ToolCall`` step runs
    a tool (its failure is an observation, never an exception); a ``str`` step is the final answer, reward 1 when
    ``verify`` accepts it, and ends the episode.

    A subclass sets ``name`` and ``system_prompt`` and defines ``verify``; it overrides ``tools_for`` when its tools
    depend on the task (the default is the ``tools`` given to ``__init__``).
    """

    name: str
    system_prompt: str

    def __init__(self, tools: list[Tool] | tuple[Tool, ...] = ()) -> None:
        self._fixed_tools = {t.name: t for t in tools}
        self._tools: dict[str, Tool] = {}
        self._task: Task | None = None
        self._done = False

    def tools_for(self, task: Task) -> dict[str, Tool]:
        """The tools of one episode, by name."""
        return self._fixed_tools

    def verify(self, task: Task, answer: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must define verify(task, answer)")

    def reset(self, task: Task) -> tuple[list[dict], list[Tool]]:
        self._tools = self.tools_for(task)
        self._task, self._done = task, False
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": task.prompt}]
        return messages, list(self._tools.values())

    def step(self, action: ToolCall | str) -> StepResult:
        if self._task is None or self._done:
            raise RuntimeError(f"{type(self).__name__}.step called before reset() or after the episode ended")
        if isinstance(action, ToolCall):
            return call_tool(self._tools, action)
        if not isinstance(action, str):
            raise TypeError(f"action must be a ToolCall or the final answer text, got {type(action).__name__}")
        self._done = True
        correct = self.verify(self._task, action)
        return StepResult(observation=None, reward=1.0 if correct else 0.0, done=True, info={"correct": correct})


def expert_transcript(env: AnswerEnv, task: Task, expert: list[dict]) -> str:
    """A scripted expert's messages (``expert``: what it adds after the prompt) played through ``env``, as text; every
    tool line is the env's own observation, not the expert's copy, so the transcript shows what the env does."""
    messages, _ = env.reset(task)
    lines = [f"user: {messages[-1]['content']}"]
    for message in expert:
        if message["role"] != "assistant":
            continue
        lines.append(f"assistant: {message['content']}")
        calls, _ = parse_tool_calls(message["content"])
        step = env.step(calls[0] if calls else message["content"])
        lines.append(f"tool: {step.observation}" if calls else f"(reward {step.reward})")
    return "\n".join(lines)
