"""Hostile programs against the python tool's isolated sandbox, with real processes, namespaces and mounts.

Each snippet runs twice: with every layer (the observation names the audit-hook rule or limit that stopped it) and
with the audit hook off (the OS layers alone: namespaces, private root, unprivileged uid, rlimits; the observation
names the kernel's refusal and the sandbox rule behind it). Each also checks the host: the file written outside is
absent, no process of a sandbox uid is left, nothing reached the listener on the host's loopback, the worker's
modules are unchanged, a host process survives ``kill(-1)``. The module skips unless the sandbox's probe measured
every layer in place: without the uid drop and the PID namespace, a fork bomb run as root could take the test
machine down.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from envs import python_env, sandbox, sandbox_process
from envs.sandbox import run_python, sandbox_status
from envs.tool_calls import ToolCall

pytestmark = [pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
CPU_S, WALL_S = 2, 5.0  # every hostile run is bounded by these
STATUS = sandbox_status()
if not STATUS.complete:
    pytest.skip(f"the isolated sandbox is not fully in place here (missing: {', '.join(STATUS.missing)}); hostile "
                f"code is not run without it\n{STATUS.table()}", allow_module_level=True)


@pytest.fixture(autouse=True)
def isolated_mode(monkeypatch):
    monkeypatch.delenv("AGENTRL_SANDBOX", raising=False)


def sandbox_processes() -> list[int]:
    """Host pids owned by a sandbox uid (the isolated sandbox gives each call one from this range)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except FileNotFoundError:
                continue
            if sandbox_process.UID_BASE <= uid < sandbox_process.UID_BASE + sandbox_process.UID_SPAN:
                pids.append(int(entry))
    return pids


def assert_no_sandbox_process_left():
    deadline = time.monotonic() + 3.0  # the namespace's teardown runs as its pid 1 exits
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []


def run(code: str, hook: bool, **kw) -> sandbox.SandboxResult:
    t0 = time.monotonic()
    r = run_python(code, cpu_s=CPU_S, wall_s=WALL_S, audit_hook=hook, **kw)
    assert time.monotonic() - t0 < WALL_S + 5  # the wall-clock kill itself is bounded
    assert not r.ok or r.error is None
    assert_no_sandbox_process_left()
    return r


HOOK = pytest.mark.parametrize("hook", [True, False], ids=["all-layers", "os-layers-only"])


@HOOK
def test_endless_loop(hook):
    r = run("print('spinning', flush=True)\nwhile True:\n    pass", hook)
    assert r.timed_out and not r.ok and r.error.startswith("timed out: the program"), r.error  # CPU or wall
    assert r.stdout == "spinning\n"


@HOOK
def test_fork_bomb(hook):
    r = run("import os\nwhile True:\n    os.fork()", hook)
    expected = "starting processes (os.fork) is blocked" if hook else (
        f"BlockingIOError: [Errno 11] Resource temporarily unavailable (line 3); the sandbox allows at most "
        f"{sandbox_process.MAX_PROCESSES} processes")
    assert not r.ok and expected in r.error, r.error


@HOOK
def test_fork_and_hold_is_capped_at_the_process_limit(hook):
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n"
            "            os._exit(0)\n        n += 1\nexcept OSError:\n    print('forked', n)\n    raise")
    r = run(code, hook)  # the held children die with the namespace: none is left on the host (checked in run)
    if hook:
        assert r.stdout == "forked 0\n" and "starting processes (os.fork)" in r.error, r
    else:
        assert r.stdout == f"forked {sandbox_process.MAX_PROCESSES - 1}\n" and "at most 8 processes" in r.error, r


@HOOK
def test_ten_gigabyte_allocation(hook):
    r = run("x = bytearray(10 * 2**30)\nprint('allocated')", hook)
    assert not r.ok and r.error == "MemoryError (line 1); the memory limit is 256 MB", r.error


@HOOK
def test_huge_print(hook):
    r = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", hook, max_output_chars=1000)
    assert r.truncated and r.timed_out and r.stdout == "x" * 1000, (r.error, len(r.stdout))


@HOOK
def test_network_socket_to_the_hosts_loopback(hook):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        r = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('in')", hook)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing reached the host
    expected = "PermissionError: network access" if hook else "Network is unreachable (line 2); the sandbox has no " \
        "network"
    assert not r.ok and "in" not in r.stdout and expected in r.error, r.error


@HOOK
def test_writing_outside(hook, tmp_path):
    target = tmp_path / "escape.txt"  # a host directory the worker can write
    project = REPO / "envs" / "pwned.py"
    for path, os_rule in ((target, "No such file or directory"), ("/tmp/agentrl-escape.txt", "Read-only file system"),
                          (project, "No such file or directory")):
        r = run(f"open({str(path)!r}, 'w').write('escaped')", hook)
        expected = f"PermissionError: writing {str(path)!r} is blocked" if hook else os_rule
        assert not r.ok and expected in r.error, r.error
        assert not os.path.exists(path)


@HOOK
def test_reading_outside(hook, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    secret.chmod(0o644)  # world-readable: only the sandbox's own view of the filesystem keeps it out
    for path in (str(secret), "/etc/passwd", str(REPO / "envs" / "sandbox.py")):
        r = run(f"print(open({path!r}).read())", hook)
        expected = "PermissionError: reading" if hook else "No such file or directory: '/"
        assert not r.ok and "s3cret" not in r.stdout and expected in r.error, r.error
        assert "the sandbox shows only its working directory" in r.error or hook


@HOOK
def test_importing_the_project_to_tamper_with_the_worker(hook):
    before = (python_env.CPU_S, python_env.run_code, sandbox.run_python, sandbox_process.MAX_PROCESSES)
    digest = hashlib.sha256((REPO / "envs" / "python_env.py").read_bytes()).hexdigest()
    code = (f"import sys\nsys.path.insert(0, {str(REPO)!r})\nimport envs.python_env as p\np.CPU_S = 10**9\n"
            "p.run_code = None\nprint('tampered')")
    r = run(code, hook)
    assert not r.ok and "tampered" not in r.stdout, r
    assert r.error.startswith("ModuleNotFoundError: No module named 'envs'"), r.error
    assert (python_env.CPU_S, python_env.run_code, sandbox.run_python, sandbox_process.MAX_PROCESSES) == before
    assert hashlib.sha256((REPO / "envs" / "python_env.py").read_bytes()).hexdigest() == digest


@HOOK
def test_signalling_every_process(hook):
    sentinel = subprocess.Popen(["sleep", "30"])  # a host process the program must not reach
    try:
        r = run("import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('sent')", hook)
        assert sentinel.poll() is None
    finally:
        sentinel.kill()
        sentinel.wait()
    expected = "sending signals (os.kill) is blocked" if hook else "the sandbox sees only its own processes"
    assert not r.ok and expected in r.error, r.error


@HOOK
def test_becoming_root(hook):
    r = run("import os\nos.setuid(0)\nprint(open('/proc/1/environ').read())", hook)
    assert not r.ok and "Operation not permitted (line 2); the program runs as an unprivileged user" in r.error


@HOOK
def test_a_daemon_left_behind_dies_with_the_call(hook):
    r = run("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')", hook)
    if hook:
        assert not r.ok and "starting processes (os.fork)" in r.error
    else:
        assert r.ok and r.stdout == "parent done\n"  # and run() found no sandbox process left on the host


@HOOK
def test_filling_the_disk(hook):
    big = run("open('big', 'wb').write(b'x' * (50 << 20))", hook)
    assert not big.ok and "File too large (line 1); files are limited to 1 MB" in big.error, big.error
    many = run("for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * ((1 << 20) - 1))", hook)
    assert not many.ok and "No space left on device (line 2); the working directory holds at most 16 MB" in many.error


def test_nothing_is_inherited():
    code = ("import os\nfds = []\nfor fd in range(3, 1024):\n    try:\n        os.fstat(fd)\n        fds.append(fd)\n"
            "    except OSError:\n        pass\nprint(sorted(os.environ), fds, os.getuid() != 0)")
    r = run(code, hook=True)
    assert r.ok and r.stdout == "['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR'] [] True\n", r


def test_the_worker_and_the_env_carry_on():
    """After the hostile calls above, the same process still runs programs, and the env turns every hostile call
    into an error observation the model can read."""
    env = python_env.PythonEnv()
    env.reset(python_env.generate_tasks(1, seed=0)[0])
    for code in ("import os\nwhile True:\n    os.fork()", "x = bytearray(10 * 2**30)", "open('/etc/passwd').read()"):
        step = env.step(ToolCall("python", {"code": code}, raw="", strict=True))
        assert step.observation.startswith("error: ") and step.info["ok"] is False and not step.done
    assert env.step(ToolCall("python", {"code": "print(6 * 7)"}, raw="", strict=True)).observation == "42"
