"""One sandboxed run, process side: start the program (jailed or not), collect its output, kill it at the wall-clock
limit, and turn what happened into a :class:`SandboxResult`. ``envs.sandbox`` decides whether a run may happen.

Two launch paths. **Isolated**: ``sandbox_setup.py`` runs as root, builds namespaces and a private root, and starts
the interpreter as an unprivileged user (see that file); it reports the program's wait status on a pipe, and at the
wall-clock limit the worker kills the namespace's pid 1 (the kernel then kills everything in it). **Audit hook
only**: the interpreter runs directly as the worker's user, in a new session; at the limit the worker kills the
session's process group. Both run ``sandbox_bootstrap.py`` (rlimits + audit hook) before the program, in a fresh
temp dir, with ``-I -S`` (no user site, no ``PYTHON*`` variables, no site-packages) and a minimal environment.

The rlimits are never set in a ``preexec_fn``: the rollout runner calls tools from a thread pool, and CPython
documents ``preexec_fn`` as unsafe in a process with threads (the child can deadlock before ``exec``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxResult", "execute", "failed", "FILE_BYTES", "WORK_BYTES", "MAX_OPEN_FILES", "MAX_PROCESSES",
           "UID_BASE", "UID_SPAN"]

FILE_BYTES = 1 << 20  # RLIMIT_FSIZE: 1 MiB per file the program writes; scratch files only
WORK_BYTES = 16 << 20  # the isolated working directory is a tmpfs of this size: bounds all files together
MAX_OPEN_FILES = 64  # RLIMIT_NOFILE: imports need a few at a time; bounds descriptor exhaustion
MAX_PROCESSES = 8  # RLIMIT_NPROC for the sandbox user (threads count): bounds a fork bomb to 8 x the memory limit
# Each isolated call runs as its own uid from this range (no passwd entry needed): RLIMIT_NPROC counts per uid, so
# one call's fork bomb cannot use up the process budget of a call running beside it.
UID_BASE, UID_SPAN = 2_000_000_000, 1_000_000
BOOTSTRAP = Path(__file__).with_name("sandbox_bootstrap.py").read_text()
SETUP = str(Path(__file__).with_name("sandbox_setup.py"))
_READ_CHUNK = 1 << 16
_MAX_ERROR_CHARS = 300  # the error line the model sees; the whole message is in SandboxResult.stderr
_LINE = re.compile(r'File "main\.py", line (\d+)')
_FIX_SETUP = ("Fix: run the worker as root with CAP_SYS_ADMIN, or set AGENTRL_SANDBOX=audit-hook for the weaker "
              "sandbox (docs/reliability.md)")


@dataclass(frozen=True)
class SandboxResult:
    """What one run produced. ``ok`` is True iff the program ran to the end (exit status 0) within its limits.

    ``stdout`` is the head of what it printed (at most ``max_output_chars``; ``truncated`` says whether more was
    cut), ``stderr`` the tail of its error stream, ``error`` one line for a failed run: the traceback's last line
    with the program's line number (and the limit or sandbox rule behind an OS error), a timeout, or a crash.
    """

    stdout: str
    stderr: str
    ok: bool
    error: str | None
    timed_out: bool
    truncated: bool
    returncode: int | None


def failed(message: str) -> SandboxResult:
    return SandboxResult(stdout="", stderr="", ok=False, error=message, timed_out=False, truncated=False,
                         returncode=None)


@functools.cache
def jail_layout() -> tuple[tuple[str, ...], dict[str, str]]:
    """What the isolated root shows, read-only: (directories bound from the host, top-level symlinks copied).

    The system library directories (or their merged-/usr symlinks) and the Python install; nothing else of the
    host (no /etc, /home, /root, /tmp, project checkout or secrets) exists inside.
    """
    binds: list[str] = []
    links: dict[str, str] = {}
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            links[path] = os.readlink(path)
        elif os.path.isdir(path):
            binds.append(path)
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        path = os.path.realpath(path)
        if path != "/" and not any(path == b or path.startswith(b + "/") for b in binds):
            binds = [b for b in binds if not b.startswith(path + "/")] + [path]
    return tuple(binds), links


def execute(code: str, *, cpu_s: float, memory_mb: int, max_chars: int, wall_s: float, isolated: bool,
            audit_hook: bool) -> SandboxResult:
    """Run ``code`` once; every failure, the sandbox's own included, is a result with ``ok=False``."""
    try:
        with tempfile.TemporaryDirectory(prefix="agentrl-python-") as home:
            return _run_in(os.path.realpath(home), code, cpu_s=cpu_s, memory_mb=memory_mb, max_chars=max_chars,
                           wall_s=wall_s, isolated=isolated, audit_hook=audit_hook)
    except Exception as e:  # a sandbox that cannot start costs the episode one tool call, not the rollout worker
        return failed(f"the sandbox could not run the program: {type(e).__name__}: {e}")


def _run_in(home: str, code: str, *, cpu_s: float, memory_mb: int, max_chars: int, wall_s: float, isolated: bool,
            audit_hook: bool) -> SandboxResult:
    Path(home, "main.py").write_bytes(code.encode("utf-8", "surrogatepass"))  # bad text becomes a SyntaxError there
    cpu, memory_b = max(1, math.ceil(cpu_s)), int(memory_mb * 2**20)
    nproc = MAX_PROCESSES if isolated else 0  # as root (audit-hook mode) the kernel ignores it; the hook blocks forks
    interpreter = os.path.realpath(sys.executable) if isolated else sys.executable  # the venv is not in the jail
    program = [interpreter, "-I", "-S", "-B", "-X", "utf8", "-c", BOOTSTRAP, str(cpu), str(memory_b),
               str(FILE_BYTES), str(MAX_OPEN_FILES), str(nproc), "1" if audit_hook else "0"]
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, "TMPDIR": home}
    status_r = status_w = -1
    if isolated:
        status_r, status_w = os.pipe()
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        binds, links = jail_layout()
        cfg = {"home": home, "uid": uid, "gid": uid, "argv": program, "env": env, "ro_binds": binds, "links": links,
               "work_bytes": WORK_BYTES, "status_fd": status_w, "parent_pid": os.getpid(),
               "limits": {"cpu": cpu, "as": memory_b, "fsize": FILE_BYTES, "nproc": nproc, "nofile": MAX_OPEN_FILES,
                          "core": 0}}
        argv = [interpreter, "-I", "-S", "-B", SETUP, json.dumps(cfg)]
    else:
        argv = program
    deadline = time.monotonic() + wall_s
    try:
        proc = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                pass_fds=(status_w,) if isolated else ())
    finally:
        if isolated:
            os.close(status_w)
    killed = False
    status = _Status()
    try:
        out, dropped, err = _collect(proc, deadline, cap=4 * max_chars + 4, status_fd=status_r, status=status)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    finally:
        if proc.poll() is None:
            killed = True  # past the wall limit (or we are unwinding)
            _kill(proc, status)
        proc.stdout.close()
        proc.stderr.close()
        if isolated:
            status.drain(status_r)
            os.close(status_r)
    if isolated and "error" in status.messages:
        return failed(f"sandbox unavailable: {status.messages['error']}. {_FIX_SETUP}")
    rc = proc.returncode
    if isolated:
        rc = os.waitstatus_to_exitcode(status.messages["status"]) if "status" in status.messages else None
        if rc is None and not killed:
            return failed(f"the sandbox stopped without reporting the program's status (exit {proc.returncode}): "
                          f"{err.decode('utf-8', 'replace')[-_MAX_ERROR_CHARS:]}")
    return _result(out, dropped, err, rc, killed=killed, cpu=cpu, wall_s=wall_s, memory_mb=memory_mb,
                   max_chars=max_chars, nproc=nproc)


class _Status:
    """JSON lines from sandbox_setup.py: ``init`` (host pid of the namespace's pid 1), ``status``, ``error``."""

    def __init__(self) -> None:
        self.buffer, self.messages = bytearray(), {}

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk[: max(0, 65536 - len(self.buffer))]
        *lines, rest = self.buffer.split(b"\n")
        self.buffer = bytearray(rest)
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self.messages.update(message)

    def drain(self, fd: int) -> None:
        os.set_blocking(fd, False)
        try:
            while chunk := os.read(fd, _READ_CHUNK):
                self.feed(chunk)
        except BlockingIOError:
            pass


def _kill(proc: subprocess.Popen, status: _Status) -> None:
    """Isolated: SIGKILL the namespace's pid 1, so the kernel kills all in it and S reaps it (no zombie left for the
    host's init); S itself goes a moment later. Otherwise, or if S does not exit: the whole process group."""
    init = status.messages.get("init")
    if isinstance(init, int) and proc.poll() is None:  # S alive: A is not reaped yet, so its pid is not reused
        try:
            os.kill(init, signal.SIGKILL)
            proc.wait(timeout=2.0)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _collect(proc: subprocess.Popen, deadline: float, cap: int, status_fd: int,
             status: _Status) -> tuple[bytes, int, bytes]:
    """Read the pipes until EOF or the deadline: the head of stdout (+ how many bytes were dropped), the tail of
    stderr, the status lines. Output past the cap is read and discarded rather than left in the pipe, so a chatty
    program runs to its end (closing the pipe instead would turn long output into a BrokenPipeError) and memory
    stays bounded.
    """
    head, tail, dropped = bytearray(), bytearray(), 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        if status_fd >= 0:
            sel.register(status_fd, selectors.EVENT_READ)
        while any(key.fileobj is not status_fd for key in sel.get_map().values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is status_fd:
                    status.feed(chunk)
                elif key.fileobj is proc.stdout:
                    room = max(0, cap - len(head))
                    head += chunk[:room]
                    dropped += len(chunk) - min(room, len(chunk))
                else:
                    tail += chunk
                    del tail[:-cap]
    return bytes(head), dropped, bytes(tail)


def _result(out: bytes, dropped: int, err: bytes, rc: int | None, *, killed: bool, cpu: int, wall_s: float,
            memory_mb: int, max_chars: int, nproc: int) -> SandboxResult:
    stdout = out.decode("utf-8", "replace")
    truncated = dropped > 0 or len(stdout) > max_chars
    stderr = err.decode("utf-8", "replace")
    # SIGXCPU at the soft CPU limit; SIGKILL (not ours) at the hard one, when the program ignored SIGXCPU
    cpu_limit = not killed and rc in (-signal.SIGXCPU, -signal.SIGKILL)
    if killed:
        error = (f"timed out: the program ran past the {wall_s:g} s wall-clock limit (waiting, or too slow); "
                 "make it faster")
    elif cpu_limit:
        error = (f"timed out: the program used up its {cpu} s of CPU time (an endless loop, or too slow an "
                 "algorithm); make it faster")
    elif rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        error = f"the program crashed: killed by signal {name}"
    elif rc != 0:
        error = _error_line(stderr, rc, memory_mb, nproc)  # from the whole kept tail: a long last line keeps its start
    else:
        error = None
    return SandboxResult(stdout=stdout[:max_chars], stderr=stderr[-max_chars:], ok=error is None, error=error,
                         timed_out=killed or cpu_limit, truncated=truncated, returncode=rc)


# An OS error that a sandbox layer caused -> the rule behind it, for the model (and the logs) to read.
_HINTS = (
    ("[Errno 11] Resource temporarily unavailable", "the sandbox allows at most {nproc} processes and threads"),
    ("[Errno 101] Network is unreachable", "the sandbox has no network"),
    ("[Errno 30] Read-only file system", "only the working directory is writable"),
    ("[Errno 28] No space left on device", f"the working directory holds at most {WORK_BYTES >> 20} MB"),
    ("[Errno 27] File too large", f"files are limited to {FILE_BYTES >> 20} MB"),
    ("[Errno 1] Operation not permitted", "the program runs as an unprivileged user"),
    ("[Errno 13] Permission denied", "the program runs as an unprivileged user"),
    ("No such file or directory: '/", "the sandbox shows only its working directory and the Python install"),
    ("[Errno 3] No such process", "the sandbox sees only its own processes"),
)
_MODULE_HINT = "only the Python standard library is available"


def _error_line(stderr: str, rc: int, memory_mb: int, nproc: int) -> str:
    """The traceback's last line with the program's line number, e.g. ``ZeroDivisionError: division by zero
    (line 3)``, plus the limit or rule behind it; the exit status when the program wrote nothing to stderr.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return f"the program exited with status {rc}"
    # Forked children share stderr, and one killed mid-traceback leaves a header last: take the last exception line
    exception_lines = [line.rstrip() for line in stderr.splitlines()
                       if line.strip() and not line[0].isspace() and not line.startswith("Traceback (most recent")]
    if exception_lines:
        lines = exception_lines
    last = lines[-1] if len(lines[-1]) <= _MAX_ERROR_CHARS else lines[-1][:_MAX_ERROR_CHARS] + " ..."
    where = _LINE.findall(stderr)
    if where:
        last += f" (line {where[-1]})"
    if last.startswith("MemoryError"):
        last += f"; the memory limit is {memory_mb} MB"
    elif last.startswith("ModuleNotFoundError"):
        last += "; " + _MODULE_HINT
    elif nproc:  # the isolated sandbox's OS layers: say which one stopped the program
        hint = next((h for pattern, h in _HINTS if pattern in lines[-1]), None)
        if hint:
            last += "; " + hint.format(nproc=nproc)
    return last
