from __future__ import annotations

import json

from envs.tool_calls import MAX_CALLS, ParseError, ToolCall, parse_tool_calls

CALC = '{"name": "calculator", "arguments": {"expression": "17*23"}}'


def one_call(text: str) -> ToolCall:
    calls, errors = parse_tool_calls(text)
    assert errors == [] and len(calls) == 1, (calls, errors)
    return calls[0]


def one_error(text: str) -> ParseError:
    calls, errors = parse_tool_calls(text)
    assert calls == [] and len(errors) == 1, (calls, errors)
    return errors[0]


def test_valid_call_with_text_and_newlines_is_strict():
    call = one_call(f"Let me compute.\n<tool_call>\n{CALC}\n</tool_call>\nDone.")
    assert call == ToolCall("calculator", {"expression": "17*23"}, raw=f"\n{CALC}\n", strict=True)


def test_no_tags_means_no_calls_and_no_errors():
    assert parse_tool_calls("The answer is 391. {not a call}") == ([], [])


def test_malformed_json_is_an_error_with_the_fix():
    err = one_error('<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"</tool_call>')
    assert err.message.startswith("malformed JSON in <tool_call>")
    assert 'write {"name": ..., "arguments": {...}}' in err.message


def test_nested_objects_and_braces_in_strings():
    args = {"query": {"filter": {"a": [1, {"b": "}{"}]}}, "text": "a { b } c"}
    call = one_call("<tool_call>" + json.dumps({"name": "search", "arguments": args}) + "</tool_call>")
    assert call.arguments == args and call.strict


def test_closing_tag_inside_a_json_string():
    args = {"text": "write </tool_call> literally, and <tool_call> too"}
    call = one_call("<tool_call>" + json.dumps({"name": "echo", "arguments": args}) + "</tool_call> after")
    assert call.arguments == args and call.strict


def test_two_calls_in_order():
    text = f'<tool_call>{CALC}</tool_call> and <tool_call>{{"name": "b", "arguments": {{"x": 1}}}}</tool_call>'
    calls, errors = parse_tool_calls(text)
    assert errors == []
    assert [c.name for c in calls] == ["calculator", "b"] and all(c.strict for c in calls)


def test_truncated_output():
    cut = '<tool_call>{"name": "calculator", "arguments": {"expression": "17*'
    for text in [cut, "<tool_call>", "x <tool_call>\n "]:
        assert "truncated" in one_error(text).message, text


def test_closing_tag_without_opening():
    err = one_error("I will answer now</tool_call>")
    assert err.message.startswith("</tool_call> without an opening <tool_call>")


def test_stray_closing_tag_then_valid_call():
    calls, errors = parse_tool_calls(f"</tool_call><tool_call>{CALC}</tool_call>")
    assert [c.name for c in calls] == ["calculator"] and len(errors) == 1


def test_single_quotes_are_repaired_not_strict():
    body = "{'name': 'calculator', 'arguments': {'expression': '17*23', 'exact': True}}"
    call = one_call(f"<tool_call>{body}</tool_call>")
    assert call.arguments == {"expression": "17*23", "exact": True} and not call.strict


def test_python_literal_repair_rejects_non_json_values():
    assert one_error("<tool_call>{'name': 'x', 'arguments': {'a': (1, 2)}}</tool_call>").message


def test_trailing_text_inside_tags_is_repaired():
    call = one_call(f"<tool_call>{CALC} I hope this works</tool_call>")
    assert call.arguments == {"expression": "17*23"} and not call.strict


def test_missing_closing_tag_after_complete_object_is_repaired():
    call = one_call(f"<tool_call>{CALC}\n  ")
    assert call.name == "calculator" and not call.strict


def test_missing_closing_tag_with_prose_after_is_an_error():
    assert "missing </tool_call>" in one_error(f"<tool_call>{CALC} and then I answer").message


def test_arguments_as_json_string():
    inner = json.dumps({"expression": "1+1"})
    call = one_call("<tool_call>" + json.dumps({"name": "calculator", "arguments": inner}) + "</tool_call>")
    assert call.arguments == {"expression": "1+1"} and not call.strict


def test_arguments_missing_means_empty():
    call = one_call('<tool_call>{"name": "now"}</tool_call>')
    assert call.arguments == {} and call.strict


def test_shape_errors():
    cases = {
        '{"arguments": {}}': 'missing "name"',
        '{"name": 3, "arguments": {}}': '"name" must be a non-empty string',
        '{"name": "x", "arguments": [1]}': '"arguments" must be a JSON object',
        '{"name": "x", "arguments": "17*23"}': '"arguments" must be a JSON object',
        "[1, 2]": "expected a JSON object",
    }
    for body, expected in cases.items():
        assert one_error(f"<tool_call>{body}</tool_call>").message.startswith(expected), body


def test_never_raises_on_nasty_strings():
    nasty = [
        "",
        "\ud800\x00é<tool_call>🙂",
        "{" * 1_000_000,
        "<tool_call>" + "{" * 1_000_000,
        "<tool_call>" + "[" * 100_000 + "</tool_call>",
        "<tool_call>{'a': " * 10_000,
        "<tool_call></tool_call>" * 1000,
        "</tool_call>" * 1000,
        "<tool_call>" * 1000,
        '<tool_call>{"name": "x", "arguments": {"n": ' + "9" * 10_000 + "}}</tool_call>",
    ]
    for text in nasty:
        calls, errors = parse_tool_calls(text)
        assert len(calls) + len(errors) <= MAX_CALLS + 1
    assert parse_tool_calls(None)[1]  # type: ignore[arg-type]
