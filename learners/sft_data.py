"""Demonstrations -> token ids + loss mask, built exactly as the episode runner builds a rollout.

The prompt is the template's rendering up to the first assistant turn (with the generation header), tokenized
once. Each assistant turn is its content's tokens with mask 1; everything between turns (the end of a tool-call
turn, tool results, the next header) is the suffix of the grown rendering, mask 0 (``envs.chat.suffix_ids``).
A turn that does not end with ``</tool_call>`` (a final answer) also gets ``<|im_end|>`` with mask 1: in a
rollout the model ends it by sampling that token, whereas a tool-call turn is stopped at ``</tool_call>`` and the
runner appends ``<|im_end|>`` itself. So the SFT policy learns exactly the tokens it will be asked to sample.

An assistant message with ``"weight": 0`` (OpenAI's fine-tuning format) stays in the context with mask 0: the
recovery demonstrations use it so the model learns to fix a malformed call, not to write one.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs import make_env
from envs import calculator, datetime_tasks, python_env, search_tasks, support_tasks, weather_tasks
from envs.chat import END_OF_TURN, TOOL_CALL_CLOSE, decode, format_tool_call, render, suffix_ids
from envs.task_source import draw_until, first_of_each_kind, kinds_of
from envs.tasks import Task
from envs.tool_calls import parse_tool_calls

__all__ = ["SFTExample", "DemoFormatError", "EXPERTS", "example_from_messages", "expert_demos",
           "read_openai_demos", "RECOVERY_FRACTION"]

RECOVERY_FRACTION = 0.15  # share of expert demos that open with a malformed call, its error, then the fix
_MAX_LINES = 20  # problems listed in a DemoFormatError before "... and N more"


@dataclass(frozen=True)
class SFTExample:
    """One demonstration as the policy sees it: ids (prompt + all turns) and 1 where the policy is trained."""

    input_ids: list[int]
    loss_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


class DemoFormatError(ValueError):
    """A demonstration file that does not meet the OpenAI chat format; one line per problem, naming the row."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path, self.problems = str(path), list(problems)
        shown = self.problems[:_MAX_LINES]
        lines = [f"{self.path}: {len(self.problems)} problem(s) in the demonstrations:", *(f"  {p}" for p in shown)]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


# ---- messages -> ids + mask ----


def example_from_messages(tokenizer, messages: list[dict]) -> SFTExample:
    """Token ids and loss mask of a whole conversation; ``decode(ids) == render(messages)`` is checked."""
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not turns:
        raise ValueError("demonstration has no assistant message: nothing to learn from")
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    ids = tokenizer.encode(render(messages[: turns[0]], add_generation_prompt=True), add_special_tokens=False)
    mask = [0] * len(ids)
    for k in turns:
        if k != turns[0]:  # the runner's tokens since the last turn: its end, tool results, the next header
            new = suffix_ids(tokenizer, decode(tokenizer, ids), render(messages[:k], add_generation_prompt=True))
            ids += new
            mask += [0] * len(new)
        content = messages[k].get("content") or ""
        trained = int(messages[k].get("weight", 1) != 0)
        sampled = tokenizer.encode(content, add_special_tokens=False)
        if not content.endswith(TOOL_CALL_CLOSE):
            sampled.append(eot)  # a final answer: the model itself ends the turn
        ids += sampled
        mask += [trained] * len(sampled)
    new = suffix_ids(tokenizer, decode(tokenizer, ids), render(messages))
    ids += new
    mask += [0] * len(new)
    text, expected = decode(tokenizer, ids), render(messages)
    if text != expected:
        at = next((i for i, (a, b) in enumerate(zip(text, expected)) if a != b), min(len(text), len(expected)))
        raise ValueError(f"chat contract broken: decode(ids) differs from render(messages) at char {at}: "
                         f"{text[at:at + 40]!r} vs {expected[at:at + 40]!r}")
    return SFTExample(ids, mask)


# ---- scripted expert demonstrations ----

# env name -> (seeded task generator, scripted expert); the envs SFT can write its own demonstrations for.
EXPERTS: dict[str, tuple[Callable[..., list[Task]], Callable[[Task], list[dict]]]] = {
    "calculator": (calculator.generate_tasks, calculator.scripted_expert),
    "python": (python_env.generate_tasks, python_env.scripted_expert),
    "datetime": (datetime_tasks.generate_tasks, datetime_tasks.scripted_expert),
    "search": (search_tasks.generate_tasks, search_tasks.scripted_expert),
    "weather": (weather_tasks.generate_tasks, weather_tasks.scripted_expert),
    "support_desk": (support_tasks.generate_tasks, support_tasks.scripted_expert),
}


def expert_demos(env_name: str, n: int, seed: int, recovery_fraction: float = RECOVERY_FRACTION,
                 extra: dict[str, int] | None = None) -> list[list[dict]]:
    """``n`` full conversations of the env's scripted expert on train tasks; deterministic in ``seed``.

    About ``recovery_fraction`` of them first make a realistic mistake (a malformed call, a wrong argument name,
    a wrong tool name) with ``weight: 0``, get the error observation the runner would give, then call correctly.
    ``extra`` ({kind: count}) appends that many more demos of each task kind (``meta.kind``), drawn from the
    generator's tasks after the first ``n``: the ``n`` demos are the same with or without it, and none repeats.
    """
    if env_name not in EXPERTS:
        raise ValueError(f"no scripted expert for env {env_name!r}; available: {', '.join(sorted(EXPERTS))}. "
                         "Fix: give an OpenAI-format demonstration file instead")
    generate, expert = EXPERTS[env_name]
    rng = random.Random(f"sft-demos:{env_name}:{seed}")  # str seed: stable across processes
    demos = []
    for task in generate(n, seed, "train") + _extra_tasks(env_name, generate, n, seed, extra or {}):
        env = make_env(env_name)
        messages, tools = env.reset(task)
        messages = [dict(m) for m in messages]
        next(m for m in messages if m["role"] == "system")["tools"] = [t.schema() for t in tools]
        steps = expert(task)
        if rng.random() < recovery_fraction:
            steps = _mistake(env, steps, rng) + steps
        demos.append(messages + steps)
    return demos


def _extra_tasks(env_name: str, generate, n: int, seed: int, extra: dict[str, int]) -> list[Task]:
    """``extra[kind]`` train tasks of each kind from the generator's tasks after the first ``n``, in its order."""
    wanted = {kind: count for kind, count in extra.items() if count > 0}
    if not wanted:
        return []

    def kinds_after_n(tasks: list[Task]) -> list[str | None]:
        return kinds_of(tasks[n:])

    asked = sum(wanted.values())
    drawn = draw_until(generate, seed, "train", n + 4 * asked, 64 * (n + asked),
                       lambda tasks: all(kinds_after_n(tasks).count(k) >= c for k, c in wanted.items()))
    later, kinds = drawn[n:], kinds_after_n(drawn)
    short = {k: kinds.count(k) for k, c in wanted.items() if kinds.count(k) < c}
    if short:
        there = sorted({k for k in kinds if k})
        raise ValueError(f"extra_demos: {env_name} tasks have too few of kind(s) {short} (counts found in "
                         f"{len(later)} tasks) for {wanted}. Fix: use kinds its tasks have: {there or 'none'}")
    return first_of_each_kind(later, kinds, wanted)


def _mistake(env, steps: list[dict], rng: random.Random) -> list[dict]:
    """A wrong first call and the observation the runner would return for it (parse error or tool error)."""
    call = next(m["content"] for m in steps if m["role"] == "assistant" and TOOL_CALL_CLOSE in m["content"])
    obj = json.loads(call.split("\n")[1])  # scripted calls are "<tool_call>\n{json}\n</tool_call>"
    name, args = obj["name"], obj["arguments"]
    kind = rng.choice(["missing_brace", "wrong_key", "wrong_name"])
    if kind == "missing_brace":
        text = format_tool_call(name, args).replace("}}\n", "}\n", 1)
    elif kind == "wrong_key":
        key = next(iter(args))
        text = format_tool_call(name, {key[:4] if len(key) > 4 else f"{key}_value": args[key]})
    else:
        text = format_tool_call(name[:4] if len(name) > 4 else f"{name}_tool", args)
    calls, errors = parse_tool_calls(text)
    if errors:
        observation = f"error: {errors[0].message}"
    else:
        result = env.step(calls[0])
        observation = result.observation
        if result.info.get("ok"):
            raise AssertionError(f"the scripted mistake {text!r} did not fail; fix _mistake")
    return [{"role": "assistant", "content": text, "weight": 0}, {"role": "tool", "content": observation}]


# ---- OpenAI-format demonstrations ----


def read_openai_demos(path: str | Path) -> list[list[dict]]:
    """Conversations from a JSONL or Parquet file with a ``messages`` column (OpenAI chat format), ``tools`` optional.

    Assistant ``tool_calls`` (``function.arguments`` a JSON string, as the API sends it) become our
    ``<tool_call>`` text; ``role: tool`` results become tool turns; ``tools`` go on the first system message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demonstration file not found: {path}. Fix: check the path")
    problems: list[str] = []
    rows = _read_rows(path, problems)
    demos = []
    for i, row in enumerate(rows):
        demo = _convert_row(row, f"row {i}", problems)
        if demo is not None:
            demos.append(demo)
    if problems:
        raise DemoFormatError(path, problems)
    return demos


def _read_rows(path: Path, problems: list[str]) -> list[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a non-Parquet file
            raise DemoFormatError(path, [f"cannot read as Parquet ({type(e).__name__}: {e})"]) from e
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            problems.append(f"row {len(rows)} (line {n + 1}): not valid JSON ({e.msg} at column {e.colno}). "
                            "Fix: one JSON object per line")
            rows.append(None)
    return rows


def _convert_row(row: Any, where: str, problems: list[str]) -> list[dict] | None:
    if row is None:
        return None  # already reported
    if not isinstance(row, dict):
        problems.append(f"{where}: expected an object with a 'messages' key, got {type(row).__name__}")
        return None
    messages, tools = _maybe_json(row.get("messages")), _maybe_json(row.get("tools"))
    if not isinstance(messages, list) or not messages:
        problems.append(f"{where}: 'messages' must be a non-empty list of chat messages, got {_kind(messages)}. "
                        'Fix: {"messages": [{"role": "user", "content": ...}, ...]}')
        return None
    if tools is not None and not isinstance(tools, list):
        problems.append(f"{where}: 'tools' must be a list of tool schemas, got {_kind(tools)}")
        return None
    before = len(problems)
    out = [_convert_message(m, f"{where} message {j}", problems) for j, m in enumerate(messages)]
    if len(problems) > before:
        return None
    if not any(m["role"] == "assistant" for m in out):
        problems.append(f"{where}: no assistant message. Fix: each conversation needs at least one assistant turn")
        return None
    if tools:
        if out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": ""})
        out[0].setdefault("tools", tools)
    return out


def _convert_message(m: Any, where: str, problems: list[str]) -> dict:
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
        role = m.get("role") if isinstance(m, dict) else None
        problems.append(f"{where}: role must be system, user, assistant or tool, got {role!r}")
        return {}
    role, content = m["role"], _text(m.get("content"))
    if content is None:
        problems.append(f"{where}: content must be a string or a list of text parts, got {_kind(m.get('content'))}")
        return {}
    out: dict = {"role": role, "content": content}
    if role == "system" and isinstance(_maybe_json(m.get("tools")), list):
        out["tools"] = _maybe_json(m["tools"])
    if role == "tool" and m.get("name"):
        out["name"] = m["name"]
    if role == "assistant":
        calls = []
        for c, call in enumerate(m.get("tool_calls") or []):
            text = _call_text(call, f"{where} tool_calls[{c}]", problems)
            if text is not None:
                calls.append(text)
        out["content"] = "\n".join([content] * bool(content) + calls)
        if m.get("weight") is not None:
            out["weight"] = m["weight"]
    return out


def _call_text(call: Any, where: str, problems: list[str]) -> str | None:
    fn = call.get("function") if isinstance(call, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        problems.append(f'{where}: expected {{"type": "function", "function": {{"name": ..., "arguments": "..."}}}}')
        return None
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            problems.append(f"{where}: function.arguments is not valid JSON ({e.msg}). Fix: json.dumps the arguments")
            return None
    if not isinstance(args, dict):
        problems.append(f"{where}: function.arguments must be a JSON object, got {_kind(args)}")
        return None
    return format_tool_call(name, args)


def _maybe_json(value: Any) -> Any:
    """Parquet files often store nested columns as JSON strings; accept both."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _text(content: Any) -> str | None:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
