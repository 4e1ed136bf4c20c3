"""Tool environments and task sets: gymnasium-style ``reset(task)`` / ``step(action)`` over text.

``ENVS`` is the one place env names are bound to classes (the ``env`` column of a task file names one).
"""

from __future__ import annotations

from collections.abc import Callable

from envs.base import Env, StepResult, Tool, ToolError, call_tool, check_arguments
from envs.calculator import CalculatorEnv
from envs.calculator import generate_tasks as generate_calculator_tasks
from envs.datetime_env import DateTimeEnv
from envs.datetime_tasks import generate_tasks as generate_datetime_tasks
from envs.python_env import PythonEnv
from envs.search_env import SearchEnv
from envs.search_tasks import generate_tasks as generate_search_tasks
from envs.support_desk import SupportDeskEnv
from envs.support_tasks import generate_tasks as generate_support_tasks
from envs.weather_env import WeatherEnv
from envs.weather_tasks import generate_tasks as generate_weather_tasks
from envs.python_env import generate_tasks as generate_python_tasks
from envs.tasks import TASK_SCHEMA, Task, TaskFileError, read_tasks, rows_to_tasks, tasks_to_rows, write_tasks
from envs.tool_calls import ParseError, ToolCall, parse_tool_calls

__all__ = [
    "ENVS",
    "TASK_GENERATORS",
    "make_env",
    "UnknownEnvError",
    "Env",
    "StepResult",
    "Tool",
    "ToolError",
    "call_tool",
    "check_arguments",
    "CalculatorEnv",
    "PythonEnv",
    "DateTimeEnv",
    "SearchEnv",
    "WeatherEnv",
    "SupportDeskEnv",
    "Task",
    "TASK_SCHEMA",
    "TaskFileError",
    "read_tasks",
    "write_tasks",
    "tasks_to_rows",
    "rows_to_tasks",
    "ToolCall",
    "ParseError",
    "parse_tool_calls",
]

ENVS: dict[str, Callable[[], Env]] = {"calculator": CalculatorEnv, "python": PythonEnv, "datetime": DateTimeEnv,
                                      "search": SearchEnv, "weather": WeatherEnv,
                                      "support_desk": SupportDeskEnv}
# Seeded task generators, by env name: (n, seed, split) -> tasks in the task schema.
TASK_GENERATORS: dict[str, Callable[..., list[Task]]] = {
    "calculator": generate_calculator_tasks,
    "python": generate_python_tasks,
    "datetime": generate_datetime_tasks,
    "search": generate_search_tasks,
    "weather": generate_weather_tasks,
    "support_desk": generate_support_tasks,
}


class UnknownEnvError(KeyError):
    """An env name not in ``ENVS``; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would show the repr of the message, quotes and escapes included
        return str(self.args[0]) if self.args else ""


def make_env(name: str) -> Env:
    """A fresh env instance for ``name`` (one per concurrent episode)."""
    try:
        factory = ENVS[name]
    except (KeyError, TypeError):
        raise UnknownEnvError(f"unknown env {name!r}; known envs: {', '.join(sorted(ENVS))}") from None
    return factory()
