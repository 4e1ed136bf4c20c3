"""Hermes-style tool call parsing: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

A small model writes these badly, so parsing is tolerant of harmless slips (single quotes, trailing text,
a missing closing tag) and marks every repaired call ``strict=False`` so rewards can tell the difference.
Anything it cannot read becomes a :class:`ParseError` whose message the model sees as an observation;
``parse_tool_calls`` never raises, whatever the text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, replace

__all__ = ["ToolCall", "ParseError", "parse_tool_calls", "OPEN_TAG", "CLOSE_TAG", "MAX_CALLS"]

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
MAX_CALLS = 64  # calls + errors per turn; bounds the work a pathological generation can cause
_MAX_REPAIR_CHARS = 20_000  # ast.literal_eval is only tried on call bodies this short: it is slow on huge inputs
_MAX_DEPTH = 64  # nesting accepted from a repaired Python literal
_HINT = 'write {"name": ..., "arguments": {...}}'
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


@dataclass(frozen=True)
class ToolCall:
    """One parsed call. ``strict`` is True iff the text was valid JSON in the exact format, with no repair."""

    name: str
    arguments: dict
    raw: str
    strict: bool


@dataclass(frozen=True)
class ParseError:
    """A call that could not be read; ``message`` starts with what went wrong and ends with the fix."""

    message: str
    raw: str


def parse_tool_calls(text: str) -> tuple[list[ToolCall], list[ParseError]]:
    """Return every tool call in ``text`` in order, and every problem found; never raises.

    >>> calls, errors = parse_tool_calls('<tool_call>{"name": "calc", "arguments": {"x": "2*3"}}</tool_call>')
    >>> calls[0].name, calls[0].arguments, calls[0].strict, errors
    ('calc', {'x': '2*3'}, True, [])
    """
    calls: list[ToolCall] = []
    errors: list[ParseError] = []
    if not isinstance(text, str):
        return calls, [ParseError(f"expected the model's text, got {type(text).__name__}", "")]
    try:
        _scan(text, calls, errors)
    except Exception as e:  # a bug here must cost one turn, not the rollout
        errors.append(ParseError(f"internal error while parsing tool calls: {type(e).__name__}: {e}", ""))
    return calls, errors


def _scan(text: str, calls: list[ToolCall], errors: list[ParseError]) -> None:
    pos = 0
    while len(calls) + len(errors) < MAX_CALLS:
        open_at = text.find(OPEN_TAG, pos)
        close_at = text.find(CLOSE_TAG, pos, open_at if open_at != -1 else len(text))
        if close_at != -1:
            errors.append(ParseError(f"{CLOSE_TAG} without an opening {OPEN_TAG}; {_HINT} between the two tags", ""))
            pos = close_at + len(CLOSE_TAG)
            continue
        if open_at == -1:
            return
        result, pos = _parse_one(text, open_at + len(OPEN_TAG))
        (calls if isinstance(result, ToolCall) else errors).append(result)
    if text.find(OPEN_TAG, pos) != -1:
        errors.append(ParseError(f"too many tool calls in one turn (at most {MAX_CALLS}); the rest were ignored", ""))


def _parse_one(text: str, start: int) -> tuple[ToolCall | ParseError, int]:
    """Parse the call whose body starts at ``start``; return it and where scanning resumes."""
    next_open = text.find(OPEN_TAG, start)
    bound = next_open if next_open != -1 else len(text)  # an unclosed call ends where the next one begins
    close_at = text.find(CLOSE_TAG, start, bound)
    region_end = close_at if close_at != -1 else bound
    if text[start:region_end].strip() == "":
        if close_at == -1:
            return ParseError(f"truncated: {OPEN_TAG} with no call after it; {_HINT}", text[start:bound]), bound
        return ParseError(f"empty {OPEN_TAG}; {_HINT}", text[start:close_at]), close_at + len(CLOSE_TAG)
    body_start = text.find("{", start, region_end)
    if body_start == -1:
        return _parse_broken(text, start, start, bound, close_at, None), _resume(close_at, bound)
    # Text before the object (a ```json fence, "call:") is a harmless slip: skip it, but not strictly.
    prefixed = text[start:body_start].strip() != ""
    try:
        obj, json_end = _DECODER.raw_decode(text, body_start)
    except Exception as e:  # JSONDecodeError; RecursionError on deep nesting; ValueError on huge integers
        result: ToolCall | ParseError = _parse_broken(text, start, body_start, bound, close_at, e)
        pos = _resume(close_at, bound)
    else:
        result, pos = _after_json(text, start, obj, json_end)
    if prefixed and isinstance(result, ToolCall):
        result = replace(result, strict=False)
    return result, pos


def _resume(close_at: int, bound: int) -> int:
    return close_at + len(CLOSE_TAG) if close_at != -1 else bound


def _after_json(text: str, start: int, obj: object, json_end: int) -> tuple[ToolCall | ParseError, int]:
    """The JSON object parsed; decide how it was closed (the closing tag may sit inside a JSON string)."""
    next_open = text.find(OPEN_TAG, json_end)  # not ``bound``: a JSON string may contain the opening tag
    bound = next_open if next_open != -1 else len(text)
    after = json_end
    while after < len(text) and text[after] in _WS:
        after += 1
    if text.startswith(CLOSE_TAG, after):
        return _to_call(obj, text[start:after], strict=True), after + len(CLOSE_TAG)
    close_at = text.find(CLOSE_TAG, json_end, bound)
    if close_at != -1:  # trailing text inside the tags: harmless, the object is complete
        return _to_call(obj, text[start:close_at], strict=False), close_at + len(CLOSE_TAG)
    if after >= bound:  # complete object, then only whitespace: the closing tag was simply left out
        return _to_call(obj, text[start:json_end], strict=False), json_end
    raw = text[start:bound]
    return ParseError(f"missing {CLOSE_TAG} after the JSON object; {_HINT} then {CLOSE_TAG}", raw), bound


def _parse_broken(
    text: str, start: int, body_start: int, bound: int, close_at: int, err: Exception | None
) -> ToolCall | ParseError:
    """The body is not valid JSON: try the Python-literal repair, else explain what is wrong."""
    end = close_at if close_at != -1 else bound
    raw = text[start:end]
    body = text[body_start:end].strip()
    repaired = _literal(body)
    if repaired is not None:
        return _to_call(repaired, raw, strict=False)
    if close_at == -1:
        return ParseError(f"truncated: {OPEN_TAG} has no {CLOSE_TAG} and the call is incomplete; {_HINT}", raw)
    if isinstance(err, json.JSONDecodeError):
        where = f"at char {err.pos - body_start}" if err.pos >= body_start else ""
        return ParseError(f"malformed JSON in {OPEN_TAG}: {err.msg} {where}; {_HINT}".replace(" ;", ";"), raw)
    if err is not None:
        return ParseError(f"malformed JSON in {OPEN_TAG}: {type(err).__name__}: {str(err)[:80]}; {_HINT}", raw)
    return ParseError(f"expected a JSON object in {OPEN_TAG}, got {_snippet(body)}; {_HINT}", raw)


def _literal(body: str) -> object | None:
    """Read a Python-literal dict (single quotes, True/None); None unless it is a dict of JSON-like values."""
    if not body.startswith("{") or len(body) > _MAX_REPAIR_CHARS:
        return None
    try:
        value = ast.literal_eval(body)
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError: not repairable
        return None
    return value if isinstance(value, dict) and _json_like(value, 0) else None


def _json_like(value: object, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_json_like(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v, depth + 1) for k, v in value.items())
    return False


def _to_call(obj: object, raw: str, *, strict: bool) -> ToolCall | ParseError:
    """Check the call's shape: a string "name" and an object "arguments" (missing means {})."""
    if not isinstance(obj, dict):
        return ParseError(f"tool call must be a JSON object, got a JSON {_json_type(obj)}; {_HINT}", raw)
    if "name" not in obj:
        return ParseError(f'missing "name" in {OPEN_TAG}; {_HINT}', raw)
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        got = _snippet(json.dumps(name), quote=False)
        return ParseError(f'"name" must be a non-empty string, got {got}; {_HINT}', raw)
    args = obj.get("arguments", {})
    if args is None:
        args, strict = {}, False
    elif isinstance(args, str):  # arguments JSON-encoded twice, as OpenAI's API sends them
        try:
            decoded = json.loads(args) if args.strip() else {}
        except Exception:
            decoded = None
        if not isinstance(decoded, dict):
            return ParseError(f'"arguments" must be a JSON object, got the string {_snippet(args)}; {_HINT}', raw)
        args, strict = decoded, False
    elif not isinstance(args, dict):
        return ParseError(f'"arguments" must be a JSON object, got a JSON {_json_type(args)}; {_HINT}', raw)
    if _lone_surrogate(name) or _lone_surrogate(args):  # valid JSON, but no UTF-8 text: it would break every sink
        return ParseError('the call contains a lone surrogate escape such as "\\ud800", which is not valid unicode; '
                          f"write the character itself; {_HINT}", raw)
    return ToolCall(name=name, arguments=args, raw=raw, strict=strict)


def _lone_surrogate(value: object) -> bool:
    """Does any string in ``value`` (keys included) hold a lone surrogate? Iterative: JSON may nest deeply."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _snippet(s: str, limit: int = 60, quote: bool = True) -> str:
    s = s if len(s) <= limit else s[:limit] + "..."
    return repr(s) if quote else s
