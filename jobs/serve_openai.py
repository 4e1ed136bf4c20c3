"""The OpenAI chat-completions protocol on top of our chat contract: requests in, our rendering out, and the model's
``<tool_call>`` blocks back as OpenAI ``tool_calls``.

Plain functions and pydantic models, no engine and no Ray, so the mapping is unit-tested on its own
(tests/jobs/test_serve_openai.py). The mapping, in both directions:

- ``tools`` (OpenAI function specs) go into the first system message, rendered by ``envs/chat_template.jinja``
  exactly as the envs render their tools (``{"type": "function", "function": {name, description, parameters}}``),
  so a request that describes the calculator the way the calculator env does is the token-identical prompt the
  policy was trained on. A request with tools but no system message gets ``api.default_system_prompt``.
- an assistant message's ``tool_calls`` become ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
  lines after its text (``envs.chat.format_tool_call``, what demonstrations write); ``tool`` messages become tool
  turns (``<tool_response>``).
- the reply is parsed with the rollout's tolerant parser (``envs.tool_calls``): every call becomes
  ``{"id": "call_...", "type": "function", "function": {"name", "arguments": <JSON text>}}`` with
  ``finish_reason: "tool_calls"``; text before the first call is ``content`` (null when empty). A reply whose call
  does not parse is returned as plain text, as the rollout would show the model its error.

Generation stops at ``envs.chat.TOOL_CALL_STOP`` as in rollout, so one reply carries at most one call (the policy
was trained on one call per turn); the runner's closing ``>`` is added back before parsing.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from envs.chat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, TOOL_CALL_STOP, format_tool_call
from envs.tool_calls import parse_tool_calls

__all__ = ["ChatRequest", "to_messages", "choice", "completion", "model_list", "error_body", "validation_message"]

ROLES = ("system", "developer", "user", "assistant", "tool")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. OpenAI's "strict": accepted, not rendered
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec

    def rendered(self) -> dict:
        """The env's own tool format and key order (``envs.base.Tool.schema``): the tokens the policy saw."""
        fn: dict[str, Any] = {"name": self.function.name}
        if self.function.description is not None:
            fn["description"] = self.function.description
        if self.function.parameters is not None:
            fn["parameters"] = self.function.parameters
        return {"type": "function", "function": fn}


class FunctionCall(BaseModel):
    name: str = Field(min_length=1)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"must be a JSON object as text, e.g. '{{\"x\": 1}}' ({err.msg})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"must be a JSON object as text, got a JSON {type(parsed).__name__}")
        return value


class ToolCallIn(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls, this one has role {self.role!r}")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content (only an assistant message with tool_calls may "
                             "have none)")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields we honour; other OpenAI fields (user, logit_bias, ...) are accepted and ignored, as vLLM does."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value):
        if value not in (None, "auto", "none"):
            raise ValueError(f"{value!r} is not supported; the policy decides when to call a tool. Fix: use 'auto' "
                             "(or 'none' to get the text without parsing calls)")
        return value

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise ValueError("streaming is not supported by this server. Fix: send stream=false")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings. Fix: shorten the list")
        return stops

    @field_validator("tools")
    @classmethod
    def _tools_unique(cls, tools):
        names = [t.function.name for t in tools or []]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"{twice} declared more than once. Fix: give every function its own name")
        return tools

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def parses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


def to_messages(req: ChatRequest, default_system_prompt: str) -> list[dict]:
    """OpenAI messages -> our message list (tools attached to the first system message), ready for ``render``."""
    messages: list[dict] = []
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        content = m.text()
        if m.tool_calls:
            calls = [format_tool_call(c.function.name, json.loads(c.function.arguments or "{}")) for c in m.tool_calls]
            content = "\n".join(([content] if content else []) + calls)
        messages.append({"role": role, "content": content})
    if req.tools:
        if messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": default_system_prompt})
        messages[0]["tools"] = [t.rendered() for t in req.tools]
    return messages


def choice(index: int, text: str, *, finish_reason: str | None, stop_reason: Any, parse_tools: bool,
           user_stops: list[str]) -> dict:
    """One OpenAI choice from the engine's text for it.

    >>> c = choice(0, '<tool_call>\\n{"name": "calculator", "arguments": {"expression": "2+3"}}\\n</tool_call',
    ...            finish_reason="stop", stop_reason="</tool_call", parse_tools=True, user_stops=[])
    >>> c["finish_reason"], c["message"]["content"], c["message"]["tool_calls"][0]["function"]["arguments"]
    ('tool_calls', None, '{"expression": "2+3"}')
    >>> choice(0, "2 + 3 = 5.", finish_reason="stop", stop_reason=None, parse_tools=True, user_stops=[])["message"]
    {'role': 'assistant', 'content': '2 + 3 = 5.'}
    """
    if stop_reason == TOOL_CALL_STOP and text.endswith(TOOL_CALL_STOP):
        text += TOOL_CALL_CLOSE[len(TOOL_CALL_STOP):]  # the stop string is the tag without its '>' (envs/chat.py)
    elif isinstance(stop_reason, str) and stop_reason in user_stops and text.endswith(stop_reason):
        text = text[: -len(stop_reason)]  # OpenAI leaves the client's stop string out of the text
    calls = parse_tool_calls(text)[0] if parse_tools else []
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["content"] = text[: text.find(TOOL_CALL_OPEN)].strip() or None
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}} for c in calls]
        finish_reason = "tool_calls"
    elif finish_reason != "length":
        finish_reason = "stop"
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None}


def completion(model: str, choices: list[dict], *, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def model_list(models: list[tuple[str, str, str | None]], created: int) -> dict:
    """``/v1/models``: (id, root path, parent id or None) per served model."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "agentrl",
                                        "root": root, "parent": parent} for name, root, parent in models]}


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error shape, which the ``openai`` client turns into ``e.message``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """FastAPI/pydantic errors -> one message naming every bad field, and the first field (OpenAI's ``param``).

    >>> validation_message([{"loc": ("body", "messages"), "msg": "Field required", "type": "missing"}])
    ('invalid request: messages: Field required. Fix: send the fields of the OpenAI chat-completions API', 'messages')
    """
    parts, first = [], None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})")
            continue
        field = ".".join(loc) or "body"
        first = first or field
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "literal_error" and "input" in err:
            msg += f" (got {err['input']!r})"
        parts.append(f"{field}: {msg}")
    message = "invalid request: " + "; ".join(parts)
    if "Fix:" not in message:
        message += ". Fix: send the fields of the OpenAI chat-completions API"
    return message, first
