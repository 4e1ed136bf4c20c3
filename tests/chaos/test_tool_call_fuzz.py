"""Tool-call fuzzing: generated model output through the parser and the envs' dispatch, as the rollout runner does it.

``test_parse_and_dispatch`` drives 10,000 generated strings (valid calls, broken and truncated JSON, Python-literal
slips, huge arguments, wrong types, unknown tools, arbitrary unicode, stray tags) through ``parse_tool_calls`` and
``env.step`` of every env, the way ``actors.episode`` does: a parse error becomes an observation, each call runs
against the episode's env, text without a call is a final answer. No exception may escape, and every tool step is a
valid result or an ``error: ...`` observation. The python tool's sandbox is replaced by a recorder there (10,000
processes would take many minutes); ``test_sandbox_executes_generated_programs`` runs 200 generated programs
through the real isolated sandbox. Hypothesis runs derandomized (the same examples on every run) with no deadline.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import ENVS, TASK_GENERATORS, python_env, sandbox
from envs.python_env import generate_tasks
from envs.tool_calls import CLOSE_TAG, OPEN_TAG, parse_tool_calls

pytestmark = pytest.mark.timeout(600)

FUZZ_EXAMPLES, SANDBOX_EXAMPLES = 10_000, 200
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
ENV_NAMES = sorted(ENVS)
TASKS = {name: TASK_GENERATORS[name](3, seed=0) for name in ENV_NAMES}
_TOOLS = {name: ENVS[name]().reset(TASKS[name][0])[1] for name in ENV_NAMES}
TOOL_NAMES = sorted({t.name for tools in _TOOLS.values() for t in tools})
ARG_KEYS = sorted({k for tools in _TOOLS.values() for t in tools for k in t.parameters.get("properties", {})})

# ---- strategies ----

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
huge = st.builds(lambda piece, n: piece * (n // len(piece)), st.sampled_from(["x", "9", "(", "[", "{", "é", "\\u0000",
                                                                             "🙂", "1+", OPEN_TAG, '"', "\\"]),
                 st.integers(1_000, 100_000))  # up to 100k characters: far past any turn a model writes
nasty = st.sampled_from(["2**10**10", "9" * 5000, "1/0", "()" * 3000, "-" * 10_000 + "1", "1e308*1e308",
                         "__import__('os').system('id')", "2026-02-30", "9999-12-31", "0000-00-00", "../../etc/passwd",
                         "' OR 1=1 --", "%s%s%s%n", "\x00", "NaN", "Infinity", "-0", "\ud800"])
plausible = st.sampled_from(["Paris", "Tokyo", "2024-01-31", "2024-02-29", "ORD-1001", "C-001", "3 + 4", "17 * 23",
                             "print(6 * 7)", "refund policy", "UTC", "Europe/Paris", "doc-1", "Alice", "12.5", 3, 0, -1,
                             2.5, 10**30, True, None])
arg_value = plausible | json_values | huge | nasty
arguments = (st.dictionaries(st.sampled_from(ARG_KEYS) | st.text(max_size=6), arg_value, max_size=4)
             | json_values | huge)
names = st.sampled_from(TOOL_NAMES + ["unknown_tool", "", " ", "Python", "calculator ", "python\x00", "🐍",
                                      "a" * 300]) | json_values
SCHEMAS = {t.name: t.parameters for tools in _TOOLS.values() for t in tools}


@st.composite
def schema_shaped(draw) -> dict:
    """A call to a real tool with its own argument names, values mostly plausible: the path to a tool that runs."""
    name = draw(st.sampled_from(sorted(SCHEMAS)))
    props = SCHEMAS[name].get("properties", {})
    args = {key: draw(plausible) for key in props if draw(st.integers(0, 5))}
    if draw(st.integers(0, 4)) == 0:
        args[draw(st.sampled_from(ARG_KEYS) | st.text(max_size=6))] = draw(arg_value)
    return {"name": name, "arguments": args}

@st.composite
def call_body(draw) -> str:
    obj: dict = {}
    if draw(st.booleans()):
        obj = draw(schema_shaped())
    else:
        if draw(st.integers(0, 9)):
            obj["name"] = draw(names)
        if draw(st.integers(0, 9)):
            obj["arguments"] = draw(arguments)
    if "arguments" in obj and draw(st.integers(0, 9)) == 0:
        obj["arguments"] = json.dumps(obj["arguments"])  # encoded twice, OpenAI-style
    style = draw(st.sampled_from(["json", "json", "json", "literal", "cut", "delete", "insert"]))
    body = repr(obj) if style == "literal" else json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if style in ("cut", "delete", "insert") and body:
        at = draw(st.integers(0, len(body) - 1))
        if style == "cut":
            body = body[:at]
        elif style == "delete":
            body = body[:at] + body[at + 1:]
        else:
            body = body[:at] + draw(st.sampled_from(list('{}[]",:\'\\') + [OPEN_TAG, CLOSE_TAG])) + body[at:]
    return body


@st.composite
def model_text(draw) -> str:
    """One assistant turn: prose, zero or more calls (closed or not), stray tags, arbitrary unicode."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=300))
    parts = [draw(st.text(max_size=40))]
    for _ in range(draw(st.integers(1, 3))):
        parts.append(draw(st.sampled_from([OPEN_TAG, OPEN_TAG + "\n", "```json\n" + OPEN_TAG, CLOSE_TAG, ""])))
        parts.append(draw(call_body()))
        parts.append(draw(st.sampled_from([CLOSE_TAG, "\n" + CLOSE_TAG, "", " trailing" + CLOSE_TAG, CLOSE_TAG * 2])))
        parts.append(draw(st.text(max_size=20)))
    return "".join(parts)


# ---- the runner's handling of one turn ----


def play_turn(env_name: str, text: str, stats: Counter) -> None:
    """What ``actors.episode`` does with one sampled turn, against a fresh episode of ``env_name``."""
    env = ENVS[env_name]()
    env.reset(TASKS[env_name][0])
    calls, errors = parse_tool_calls(text)
    for err in errors:
        assert isinstance(err.message, str) and err.message and isinstance(err.raw, str)
        stats["parse error"] += 1
    for call in calls:
        result = env.step(call)
        assert isinstance(result.observation, str) and isinstance(result.reward, float), result
        if result.info.get("ok"):
            stats["tool ok"] += 1
        else:
            assert result.observation.startswith("error: ") and result.info["error"], result
            message = result.info["error"]
            stats["unknown tool" if message.startswith("unknown tool") else
                  "invalid arguments" if message.startswith("invalid arguments") else "tool error"] += 1
        if result.done:
            return
    if not calls and not errors:
        final = env.step(text)
        assert final.done and final.observation is None and final.reward in (0.0, 1.0), final
        stats["final answer"] += 1


def test_parse_and_dispatch(monkeypatch):
    executed: list[str] = []

    def recorder(code, **limits):  # the python tool up to the sandbox's door; the real sandbox: the next test
        executed.append(code)
        return sandbox.SandboxResult(stdout="ok\n", stderr="", ok=True, error=None, timed_out=False, truncated=False,
                                     returncode=0)

    monkeypatch.setattr(python_env, "run_python", recorder)
    stats: Counter = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, **SETTINGS)
    @given(text=model_text(), env_name=st.sampled_from(ENV_NAMES))
    def turn(text, env_name):
        stats["examples"] += 1
        play_turn(env_name, text, stats)

    t0 = time.perf_counter()
    turn()
    stats["python programs recorded"] = len(executed)
    print(f"\n{FUZZ_EXAMPLES} fuzz cases in {time.perf_counter() - t0:.1f} s: {dict(stats)}")
    assert stats["examples"] >= FUZZ_EXAMPLES
    for outcome in ("parse error", "tool ok", "unknown tool", "invalid arguments", "tool error", "final answer"):
        assert stats[outcome] >= 50, (outcome, dict(stats))  # the generator reaches every path of the dispatch
    assert len(executed) >= 5  # python calls with valid arguments reach the sandbox door (13 in one full-suite run)


# ---- real programs in the real sandbox ----

FRAGMENTS = [
    "print(1)", "x = [i * i for i in range(1000)]\nprint(sum(x))", "import os\nprint(os.getcwd())", "1 / 0",
    "import socket\nsocket.socket()", "open('/etc/passwd').read()", "import os\nos.fork()", "print('é' * 100)",
    "raise SystemExit(3)", "import sys\nsys.exit('bye')", "def f(n):\n    return f(n + 1)\nf(0)", "x = 'a' * 10**7",
    "print('\\x00')", "import ctypes", "import subprocess\nsubprocess.run(['ls'])", "exec('print(2)')",
    "__import__('os').system('ls')", "import threading\nt = threading.Thread(target=print, args=(1,))\nt.start()",
    "open('out.txt', 'w').write('hi')\nprint(open('out.txt').read())", "print(input())",
    "import faulthandler\nfaulthandler._sigsegv()", "print(*range(10**5))", "import json\nprint(json.dumps({'a': 1}))",
    "import math\nprint(math.factorial(2000) % 97)", "bytes(10**9)", "import numpy", "import envs",
    "import os\nos.kill(1, 9)", "print(open('/proc/self/status').read()[:50])", "if True:\nprint(1)",
] + [t.meta_value()["program"] for t in generate_tasks(12, seed=3)]


@st.composite
def program(draw) -> str:
    pieces = draw(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4))
    if draw(st.integers(0, 3)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.text(max_size=30)))  # junk, unicode, surrogates
    return "\n".join(pieces)


def test_sandbox_executes_generated_programs():
    status = sandbox.sandbox_status()
    if not status.complete:
        pytest.skip(f"the isolated sandbox is not fully in place here (missing: {', '.join(status.missing)})")
    stats: Counter = Counter()

    @settings(max_examples=SANDBOX_EXAMPLES, **SETTINGS)
    @given(code=program())
    def call(code):
        text = OPEN_TAG + json.dumps({"name": "python", "arguments": {"code": code}}) + CLOSE_TAG
        calls, errors = parse_tool_calls(text)
        assert errors == [] and len(calls) == 1
        env = python_env.PythonEnv()
        env.reset(TASKS["python"][0])
        result = env.step(calls[0])
        stats["executed"] += 1
        assert isinstance(result.observation, str), result
        if result.info["ok"]:
            stats["ran to the end"] += 1
        else:
            assert result.observation.startswith("error: "), result
            for broken in ("sandbox could not", "sandbox unavailable", "stopped without reporting"):
                assert broken not in result.observation, result.observation  # the sandbox itself failed
            stats["timed out" if result.observation.startswith("error: timed out") else "error observation"] += 1

    t0 = time.perf_counter()
    call()
    print(f"\n{SANDBOX_EXAMPLES} sandboxed programs in {time.perf_counter() - t0:.1f} s: {dict(stats)}")
    assert stats["executed"] >= SANDBOX_EXAMPLES
    assert stats["ran to the end"] >= 10 and stats["error observation"] >= 50, dict(stats)
