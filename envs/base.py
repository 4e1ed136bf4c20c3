"""The tool and environment contracts, and the one dispatcher every env uses to run a tool call.

Whatever the model writes, a tool call ends as an observation it can read ("error: ..." when it went wrong),
never as an exception in the rollout worker: that is why ``call_tool`` checks arguments itself and catches
everything a tool raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from envs.tool_calls import ToolCall

if TYPE_CHECKING:
    from envs.tasks import Task

__all__ = ["Tool", "ToolError", "StepResult", "Env", "call_tool", "check_arguments", "caller_error", "UNKNOWN_TOOL",
           "INVALID_ARGUMENTS"]

UNKNOWN_TOOL, INVALID_ARGUMENTS = "unknown tool", "invalid arguments for"  # how call_tool's own errors begin


class ToolError(Exception):
    """A failure the model should see and can fix; shown to it as ``error: <message>``."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call, described by the JSON schema of its arguments object."""

    name: str
    description: str
    parameters: dict
    fn: Callable[..., str]

    def schema(self) -> dict:
        """OpenAI function format, what chat templates and ``vllm serve`` expect in ``tools``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class StepResult:
    """What one env step returns.

    ``info`` for a tool step: ``{"ok", "error", "latency_s"}`` (+ ``"coerced": True`` when an argument was
    converted); for the final answer: ``{"correct"}``.
    """

    observation: str | None
    reward: float
    done: bool
    info: dict


class Env(Protocol):
    """A gymnasium-style text environment; one instance plays one episode at a time."""

    name: str

    def reset(self, task: Task) -> tuple[list[dict], list[Tool]]:
        """Start an episode: the system + user messages and the tools the model may call."""
        ...

    def step(self, action: ToolCall | str) -> StepResult:
        """A ToolCall runs a tool; a str is the final answer and ends the episode."""
        ...


def call_tool(tools: dict[str, Tool], call: ToolCall) -> StepResult:
    """Run ``call`` against ``tools``; every failure becomes an ``error: ...`` observation, never an exception."""
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return _failed(f"{UNKNOWN_TOOL} {call.name!r}; available: {available}", 0.0)
    args, problems, coerced = check_arguments(tool.parameters, call.arguments)
    if problems:
        expected = _describe(tool.parameters)
        return _failed(f"{INVALID_ARGUMENTS} {tool.name!r}: {'; '.join(problems)}; expected {expected}", 0.0)
    t0 = time.perf_counter()
    try:
        out = tool.fn(**args)
    except ToolError as e:
        return _failed(str(e), time.perf_counter() - t0, coerced)
    except Exception as e:  # a tool bug must cost the episode one turn, not crash the rollout worker
        return _failed(f"{type(e).__name__}: {e}", time.perf_counter() - t0, coerced)
    info: dict[str, Any] = {"ok": True, "error": None, "latency_s": time.perf_counter() - t0}
    if coerced:
        info["coerced"] = True
    return StepResult(observation=out if isinstance(out, str) else str(out), reward=0.0, done=False, info=info)


def caller_error(name: str, error: str | None) -> bool:
    """Was this failed call the caller's mistake, not the tool's? True for a call that could not be read (recorded
    with no name), an unknown tool, or arguments the schema rejects; False for a tool that ran and failed (a 503, a
    refused refund) and for a call that ran.

    >>> caller_error("", "invalid JSON in tool call"), caller_error("get_customer", "unknown tool 'get_customer'")
    (True, True)
    >>> caller_error("find_customer", "invalid arguments for 'find_customer': missing required 'name'")
    True
    >>> caller_error("find_customer", "service unavailable (503)"), caller_error("find_customer", None)
    (False, False)
    """
    if error is None:
        return False
    return name == "" or error.startswith((UNKNOWN_TOOL, INVALID_ARGUMENTS))


def _failed(message: str, latency_s: float, coerced: bool = False) -> StepResult:
    info: dict[str, Any] = {"ok": False, "error": message, "latency_s": latency_s}
    if coerced:
        info["coerced"] = True
    return StepResult(observation=f"error: {message}", reward=0.0, done=False, info=info)


# ---- a JSON-schema checker for the subset tools use (no dependency for ~60 lines) ----

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def check_arguments(schema: dict, value: Any) -> tuple[Any, list[str], bool]:
    """Check ``value`` against ``schema``; return (value with coercions applied, problems, whether coerced).

    Supports type object/array/string/number/integer/boolean, properties, required,
    additionalProperties false, items and enum. One coercion is tolerated, because small models do it
    often and it is harmless: a number where a string is expected becomes ``str(number)``.

    >>> check_arguments({"type": "object", "properties": {"x": {"type": "string"}}}, {"x": 17})
    ({'x': '17'}, [], True)
    """
    problems: list[str] = []
    flags: list[bool] = []
    out = _check(schema, value, "arguments", problems, flags)
    return out, problems, bool(flags)


def _check(schema: dict, value: Any, path: str, problems: list[str], flags: list[bool]) -> Any:
    if not isinstance(schema, dict):
        return value
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _PY_TYPES:
        if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
            flags.append(True)
        elif kind == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema counts 3.0 as an integer
        elif not isinstance(value, _PY_TYPES[kind]) or (isinstance(value, bool) and kind != "boolean"):
            problems.append(f"{path} must be {_article(kind)}, got {_json_type(value)}")
            return value
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path} must be one of {', '.join(repr(v) for v in schema['enum'])}, got {value!r}")
    if isinstance(value, dict):
        value = _check_object(schema, value, path, problems, flags)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [_check(schema["items"], v, f"{path}[{i}]", problems, flags) for i, v in enumerate(value)]
    return value


def _check_object(schema: dict, value: dict, path: str, problems: list[str], flags: list[bool]) -> dict:
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in value:
            problems.append(f"missing required {_key(path, key)}")
    out = {}
    for key, v in value.items():
        if key in props:
            out[key] = _check(props[key], v, _key(path, key), problems, flags)
        elif schema.get("additionalProperties") is False:
            problems.append(f"unexpected {_key(path, key)}")
        else:
            out[key] = v
    return out


def _key(path: str, key: str) -> str:
    return repr(key) if path == "arguments" else f"{path}.{key}"


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _describe(schema: dict) -> str:
    """A one-line picture of the arguments object, e.g. ``{"expression": string}``, for the error message."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return "a JSON object"
    fields = [f'"{k}": {p.get("type", "any") if isinstance(p, dict) else "any"}' for k, p in props.items()]
    return "{" + ", ".join(fields) + "}"
