"""The python env and its sandbox, with real child processes: every limit and block here is exercised, not mocked."""

from __future__ import annotations

import doctest
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from envs import python_env, sandbox
from envs.python_env import PYTHON_TOOL, PythonEnv, generate_tasks, scripted_expert, verify
from envs.sandbox import run_python
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

pytestmark = pytest.mark.timeout(60)

# Measured on the 2-core CI-like machine with a training job beside it: a ~50 ms call takes up to ~3 s now and then
# (p99 1.5 s over 626 calls). Tests of anything but the wall limit give it room, so they fail only for their subject.
ROOMY_WALL_S = 30.0


@pytest.fixture(autouse=True)
def a_sandbox_mode_that_runs_here(monkeypatch):
    """Where the isolated sandbox cannot be built (a laptop), the behaviours here are checked in the audit-hook mode;
    tests/envs/test_sandbox_status.py checks the refusal, tests/chaos/ the isolation."""
    if not sandbox.sandbox_status().complete:
        monkeypatch.setenv("AGENTRL_SANDBOX", "audit-hook")


@pytest.fixture(autouse=True)
def roomy_wall_limit(monkeypatch):
    monkeypatch.setitem(run_python.__kwdefaults__, "wall_s", ROOMY_WALL_S)  # calls (and doctests) without wall_s
    monkeypatch.setattr(python_env, "WALL_S", ROOMY_WALL_S)  # the env's run_code reads it per call


def call(code: str) -> ToolCall:
    return ToolCall("python", {"code": code}, raw="", strict=True)


def task(answer: str = "4372") -> Task:
    return Task("t", "python", "Count the primes less than 41823.", answer, json.dumps({"program": "print(4372)"}))


# ---- the sandbox ----


def test_prints_come_back():
    r = run_python("print('hello')\nprint(6 * 7)")
    assert (r.ok, r.stdout, r.error, r.timed_out, r.truncated, r.returncode) == (True, "hello\n42\n", None, False,
                                                                                 False, 0), r


def test_an_exception_is_an_error_observation_with_the_last_traceback_line():
    r = run_python("numbers = [1, 2]\nprint('before')\nprint(numbers[5])")
    assert not r.ok and r.returncode == 1 and r.stdout == "before\n"
    assert r.error == "IndexError: list index out of range (line 3)"
    assert r.stderr.startswith("Traceback") and "<string>" not in r.stderr  # the bootstrap's frame is not shown
    env = PythonEnv()
    env.reset(task())
    step = env.step(call("numbers = [1, 2]\nprint('before')\nprint(numbers[5])"))
    assert step.observation == "error: IndexError: list index out of range (line 3)\noutput before the error:\nbefore"
    assert step.info["ok"] is False and not step.done
    syntax = env.step(call("print(1 +)"))
    assert syntax.observation == "error: SyntaxError: invalid syntax (line 1)"


# On a loaded machine 1 s of CPU can take several seconds of wall time (the fixture's roomy wall limit covers it);
# the error message says which limit stopped the program: the CPU one, here.


def test_an_endless_loop_hits_the_cpu_limit_in_bounded_time():
    t0 = time.monotonic()
    r = run_python("print('started')\nwhile True:\n    pass", cpu_s=1)
    assert time.monotonic() - t0 < 35
    assert r.timed_out and not r.ok and r.error.startswith("timed out: the program used up its 1 s of CPU time")
    assert r.stdout == "started\n"  # lines printed before the kill still come back


def test_a_program_that_ignores_sigxcpu_is_still_stopped():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    t0 = time.monotonic()
    r = run_python(code, cpu_s=1)  # the hard limit (cpu_s + 1) kills it with SIGKILL
    assert time.monotonic() - t0 < 35 and r.timed_out and r.returncode == -9 and "CPU time" in r.error


def test_a_sleeping_program_hits_the_wall_limit():
    t0 = time.monotonic()
    r = run_python("import time\ntime.sleep(60)", wall_s=1)
    assert time.monotonic() - t0 < 5
    assert r.timed_out and not r.ok and "wall-clock" in r.error


def test_a_memory_bomb_fails_cleanly():
    r = run_python("x = bytearray(2**31)", memory_mb=256)
    assert not r.ok and not r.timed_out and r.returncode == 1, r
    assert r.error == "MemoryError (line 1); the memory limit is 256 MB"


def test_huge_output_is_truncated():
    r = run_python("print('x' * 10**7)\nprint('done', file=__import__('sys').stderr)", max_output_chars=1000)
    assert r.ok and r.truncated and r.stdout == "x" * 1000 and r.stderr == "done\n"  # ran to its end
    many = run_python("for i in range(20000):\n    print(i)", max_output_chars=50)
    assert many.ok and many.truncated and many.stdout == "".join(f"{i}\n" for i in range(30))[:50]
    observation = python_env.run_code("print('y' * 10**5)")
    assert observation.startswith("y" * python_env.MAX_OUTPUT_CHARS + "\n... (output cut at")


def test_network_is_blocked():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        r = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('in')")
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the listener
    assert not r.ok and "in" not in r.stdout and r.error.startswith("PermissionError: network access"), r
    r = run_python('import socket; socket.create_connection(("127.0.0.1", 9))')
    assert r.error.startswith("PermissionError: network access"), r  # not ConnectionRefusedError: never tried
    raw = run_python("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))")
    assert raw.error.startswith("PermissionError: network access (socket.__new__)"), raw


def test_writing_outside_the_temp_dir_is_blocked(tmp_path):
    for path in ("/tmp/escape.txt", str(tmp_path / "escape.txt")):
        if os.path.exists(path):
            os.remove(path)
        r = run_python(f"open({path!r}, 'w').write('escaped')")
        assert not r.ok and r.error.startswith(f"PermissionError: writing {path!r} is blocked"), r.error
        assert not os.path.exists(path)
    moved = run_python(f"import os\nopen('a.txt', 'w').write('x')\nos.rename('a.txt', {str(tmp_path / 'b.txt')!r})")
    assert not moved.ok and "os.rename" in moved.error and not (tmp_path / "b.txt").exists()
    linked = run_python(f"import os\nos.symlink({str(tmp_path / 'c.txt')!r}, 'link')\nopen('link', 'w')")
    assert not linked.ok and "os.symlink" in linked.error and not (tmp_path / "c.txt").exists()
    inside = run_python("open('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read())")
    assert inside.ok and inside.stdout == "kept\n"


def test_reading_outside_the_temp_dir_is_blocked(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    r = run_python(f"print(open({str(secret)!r}).read())")
    assert not r.ok and "s3cret" not in r.stdout and r.error.startswith("PermissionError: reading")
    assert run_python("import fractions, statistics\nprint(fractions.Fraction(1, 3) * 3)").stdout == "1\n"


@pytest.mark.parametrize(
    ("code", "blocked"),
    [
        ('import subprocess; subprocess.run_python(["echo", "hi"])', "importing '_posixsubprocess'"),
        ('import os; os.system("echo hi")', "starting processes (os.system)"),
        ("import os; os.fork()", "starting processes (os.fork)"),
        ('import os; os.execv("/bin/echo", ["echo", "hi"])', "starting processes (os.exec)"),
        ('import os; os.posix_spawn("/bin/echo", ["echo", "hi"], {})', "starting processes (os.posix_spawn)"),
        ("import os; os.kill(os.getppid(), 0)", "sending signals (os.kill)"),
        ("import ctypes", "importing 'ctypes'"),
        ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (-1, -1))", "changing the sandbox limits"),
    ],
)
def test_processes_and_escapes_are_blocked(code, blocked):
    r = run_python(code)
    assert not r.ok and "hi" not in r.stdout
    assert r.error.startswith("PermissionError: ") and blocked in r.error, r.error


def test_the_temp_dir_is_gone_after_the_call():
    finished = run_python("import os\nprint(os.getcwd())\nopen('scratch.txt', 'w').write('x')")
    killed = run_python("import os, time\nprint(os.getcwd(), flush=True)\ntime.sleep(60)", wall_s=1)
    for r in (finished, killed):
        home = r.stdout.strip()
        assert os.path.basename(home).startswith("agentrl-python-")
        assert os.path.dirname(home) == os.path.realpath(tempfile.gettempdir())
        assert not os.path.exists(home)
    assert killed.timed_out


@pytest.mark.parametrize("code", [None, 42, b"print(1)", "\x00", "print('\ud800')", "x" * (sandbox.MAX_CODE_CHARS + 1),
                                  "import sys; sys.exit(3)", "raise SystemExit('bye')", ""])
def test_never_raises(code):
    r = run_python(code)
    assert isinstance(r, sandbox.SandboxResult)
    assert r.ok == (code == "") and (r.error is None) == r.ok


def test_invalid_limits_name_the_parameter():
    with pytest.raises(ValueError, match=r"cpu_s must be > 0, got 0; wall_s must be > 0, got -1"):
        run_python("print(1)", cpu_s=0, wall_s=-1)


def test_doctests():
    for module in (sandbox, python_env):
        result = doctest.testmod(module)  # a failure's details are in the captured stdout
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---- the environment ----


def test_env_reset_and_step():
    env = PythonEnv()
    t = task()
    messages, tools = env.reset(t)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == t.prompt
    assert "python tool" in messages[0]["content"] and [tool.name for tool in tools] == ["python"]
    assert tools[0].schema()["function"]["parameters"]["required"] == ["code"]
    assert "print" in PYTHON_TOOL.description
    step = env.step(call("print(4372)"))
    assert (step.observation, step.reward, step.done, step.info["ok"]) == ("4372", 0.0, False, True)
    quiet = env.step(call("x = 4372"))
    assert quiet.info["ok"] is True and quiet.observation.startswith("(no output")
    missing = env.step(ToolCall("python", {"program": "print(1)"}, raw="", strict=True))
    assert "missing required 'code'" in missing.observation and missing.info["ok"] is False
    final = env.step("There are 4372 primes below 41823, so the answer is 4372.")
    assert (final.observation, final.reward, final.done, final.info) == (None, 1.0, True, {"correct": True})
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("4372")


@pytest.mark.parametrize(
    ("answer", "text", "ok"),
    [
        ("4372", "The answer is 4372.", True),
        ("4372", "There are 4,372 of them: 4372", True),
        ("2512573860", "The sum is 2,512,573,860.", True),
        ("2512573860", "The sum is 2512573861.", False),  # within the calculator's 1e-6, still wrong: exact here
        ("4372", "There are 4372 primes below 41823.", False),  # the last number counts, as in the calculator
        ("4372", "no idea", False),
        ("12.5", "12.5", True),
    ],
)
def test_verify(answer, text, ok):
    assert verify(task(answer), text) is ok


def test_generate_tasks_is_deterministic_and_splits_are_disjoint():
    tasks = generate_tasks(200, seed=7)
    assert tasks == generate_tasks(200, seed=7) and tasks != generate_tasks(200, seed=8)
    assert len({t.task_id for t in tasks}) == 200 and tasks[3].task_id == "py-train-7-3"
    assert {t.meta_value()["kind"] for t in tasks} == set(python_env.KINDS)
    assert all(t.env == "python" and isinstance(t.answer_value(), int) for t in tasks)
    programs = {split: {t.meta_value()["program"] for t in generate_tasks(300, seed=0, split=split)}
                for split in ("train", "val", "test")}
    assert not programs["train"] & programs["val"]
    assert not programs["train"] & programs["test"]
    assert not programs["val"] & programs["test"]
    with pytest.raises(ValueError, match="unknown split"):
        generate_tasks(1, seed=0, split="dev")


def test_scripted_expert_runs_through_the_env_and_verifies():
    def play(t: Task) -> tuple[str, str, str, float]:
        call_msg, tool_msg, answer_msg = scripted_expert(t)
        calls, errors = parse_tool_calls(call_msg["content"])
        assert errors == [] and len(calls) == 1 and calls[0].strict and calls[0].name == "python"
        env = PythonEnv()
        env.reset(t)
        step = env.step(calls[0])
        assert step.info["ok"], (t.task_id, step.observation)
        assert verify(t, step.observation)  # the tool's output itself answers the task (tool-use shaping)
        return step.observation, tool_msg["content"], answer_msg["content"], env.step(answer_msg["content"]).reward

    tasks = generate_tasks(50, seed=11, split="test")
    with ThreadPoolExecutor(4) as pool:  # the runner calls tools from a thread pool too
        results = list(pool.map(play, tasks))
    for t, (observation, demo_observation, answer, reward) in zip(tasks, results, strict=True):
        assert observation == demo_observation, t.task_id  # the demo shows exactly what the env returns
        assert reward == 1.0 and verify(t, answer), t.task_id
