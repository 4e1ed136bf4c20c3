"""Run model-written Python in a separate, limited process: the engine behind the ``python`` env's tool.

What it does, for each call: a fresh ``tempfile.TemporaryDirectory`` (the program's working directory, removed
afterwards); ``sys.executable -I -S`` (isolated: no user site, no ``PYTHON*`` variables, no site-packages) in a new
session, with a minimal environment (no ``PYTHONPATH``, no proxies, ``HOME`` and ``TMPDIR`` in the temp dir); a
small bootstrap, passed with ``-c``, that first lowers rlimits (CPU seconds, address space, file size, no new
processes, few open files, no core files), then installs a ``sys.addaudithook`` that refuses sockets, starting
processes (``subprocess``, ``os.system``, ``os.exec*``, ``os.fork``, ``os.posix_spawn``), signals to other
processes, ``ctypes``, native modules from outside the Python install, writing, linking or re-permissioning files
outside the temp dir and reading files outside it and the Python install; and only then runs the program (written
to ``main.py`` in the temp dir). The parent keeps at most ``max_output_chars`` of stdout (the head) and of stderr
(the tail, where a traceback's last line is) and kills the whole process group at the wall-clock limit.
``run_python`` never raises on any code string: every failure is a ``SandboxResult`` with ``ok=False``.

The rlimits are set by the bootstrap rather than in a ``preexec_fn``: the rollout runner calls tools from a thread
pool, and CPython documents ``preexec_fn`` as unsafe in a process with threads (the child can deadlock before
``exec``). Lowering limits is always allowed, and they are in force before the first line of the program runs.

Threat model, honestly: this is a **defence-in-depth sandbox, not a security boundary**. It is meant to stop a
policy exploring at temperature 1 from hanging, flooding or damaging the rollout worker by accident or by naive
intent (an endless loop, a memory bomb, ``rm``, a download, a fork loop), and to keep secrets on the machine out of
trajectories. Audit hooks run inside the sandboxed interpreter, so code that corrupts that interpreter (a crafted
pickle or bytecode, an interpreter bug) can switch them off; a few calls raise no audit event at all (the bootstrap
deletes the file-creating ones, ``os.mknod`` and ``os.mkfifo``); the child runs as the same user as the worker,
so it can read whatever the Python install can; and ``RLIMIT_NPROC`` is not enforced for root (the hook still
refuses ``os.fork`` and friends). A cluster deployment running untrusted policies should put the tool behind a
real boundary: a separate unprivileged container per worker with no network (Kubernetes ``NetworkPolicy`` deny-all,
``runAsNonRoot``, read-only root filesystem, CPU/memory limits), ideally under gVisor (``runtimeClassName:
gvisor``) or nsjail/bubblewrap with new user, PID, mount and network namespaces, and keep these limits inside it.
"""

from __future__ import annotations

import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxResult", "run_python", "MAX_CODE_CHARS"]

MAX_CODE_CHARS = 20_000  # far longer than any program a tool call needs; bounds what a call may write to disk
FILE_BYTES = 1 << 20  # RLIMIT_FSIZE: 1 MiB per file the program writes; scratch files only
MAX_OPEN_FILES = 64  # RLIMIT_NOFILE: imports need a few at a time; bounds descriptor exhaustion
_READ_CHUNK = 1 << 16

# Runs inside the child before the program. Everything the hook needs lives in its closure (immutable values),
# not in module globals the program could reach through sys.modules; the frame that built it is gone by the time
# the program runs.
_BOOTSTRAP = r'''
import os, resource, sys, traceback


def _guard(cpu_s, memory_b, file_b, nofile):
    limits = ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory_b, memory_b),
              (resource.RLIMIT_FSIZE, file_b, file_b), (resource.RLIMIT_NPROC, 0, 0),
              (resource.RLIMIT_NOFILE, nofile, nofile), (resource.RLIMIT_CORE, 0, 0))
    for which, soft, hard in limits:
        old_hard = resource.getrlimit(which)[1]
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))
    for name in ("mknod", "mkfifo", "chroot"):  # they create files or move / without an audit event
        for module in (os, sys.modules["posix"]):
            if hasattr(module, name):
                delattr(module, name)

    real = os.path.realpath
    home = real(os.getcwd())
    install = tuple(sorted({real(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                               os.path.dirname(os.__file__))}))
    readable = (home,) + install
    devices = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> (indexes of path arguments, indexes of dir_fd arguments)
    path_events = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                   "os.rename": ((0, 1), (2, 3)), "os.utime": ((0,), (3,)), "os.truncate": ((0,), ())}
    denied = {
        "subprocess.Popen": "starting processes", "os.system": "starting processes", "os.exec": "starting processes",
        "os.fork": "starting processes", "os.forkpty": "starting processes", "os.posix_spawn": "starting processes",
        "os.spawn": "starting processes", "pty.spawn": "starting processes", "os.kill": "sending signals",
        "os.killpg": "sending signals", "signal.pthread_kill": "sending signals", "os.chmod": "changing permissions",
        "os.chown": "changing owners", "os.link": "linking files", "os.symlink": "linking files",
        "os.setxattr": "changing file attributes", "os.removexattr": "changing file attributes",
        "resource.setrlimit": "changing the sandbox limits", "resource.prlimit": "changing the sandbox limits",
        "gc.get_objects": "walking the interpreter's objects", "gc.get_referrers": "walking the interpreter's objects",
        "gc.get_referents": "walking the interpreter's objects",
    }
    modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "posix", "_xxsubinterpreters", "_testcapi",
                         "_testinternalcapi"})

    def resolve(path):
        try:
            return real(os.fsdecode(os.fspath(path)))
        except Exception:  # not a path (or an unresolvable one): treated as outside everything
            return None

    def inside(path, roots):
        p = resolve(path)
        return p is not None and any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & write_flags:
                if not inside(path, (home,)):
                    raise PermissionError(f"writing {path!r} is blocked in this sandbox; write files in the "
                                          "working directory with a relative path such as 'out.txt'")
            elif not inside(path, readable) and resolve(path) not in devices:
                raise PermissionError(f"reading {path!r} is blocked in this sandbox; only the working directory "
                                      "and the Python standard library can be read")
            elif os.path.isdir(path) and not inside(path, (home,)):
                raise PermissionError(f"opening the directory {path!r} is blocked in this sandbox")
        elif event.startswith("socket."):
            raise PermissionError(f"network access ({event}) is blocked in this sandbox; compute the answer "
                                  "with the standard library instead")
        elif event.startswith("ctypes."):
            raise PermissionError(f"ctypes ({event}) is blocked in this sandbox")
        elif event == "import":
            if args[0] in modules or args[0].startswith("ctypes."):
                raise PermissionError(f"importing {args[0]!r} is blocked in this sandbox")
            if isinstance(args[1], str) and not inside(args[1], install):
                raise PermissionError(f"loading the native module {args[1]!r} is blocked in this sandbox")
        elif event in denied:
            raise PermissionError(f"{denied[event]} ({event}) is blocked in this sandbox; do the work in "
                                  "Python itself")
        elif event in path_events:
            paths, dir_fds = path_events[event]
            if any(i < len(args) and args[i] not in (None, -1) for i in dir_fds):
                raise PermissionError(f"{event} with dir_fd is blocked in this sandbox; use a relative path")
            for i in paths:
                if not isinstance(args[i], int) and not inside(args[i], (home,)):
                    raise PermissionError(f"{event} on {args[i]!r} is blocked in this sandbox; only files in "
                                          "the working directory can be changed")
        elif event in ("os.listdir", "os.scandir"):
            path = "." if args[0] is None else args[0]
            if not isinstance(path, int) and not inside(path, readable):
                raise PermissionError(f"listing {path!r} is blocked in this sandbox; only the working directory "
                                      "and the Python standard library can be read")

    sys.addaudithook(hook)


def _run():
    main = type(sys)("__main__")
    main.__file__ = "main.py"
    sys.modules["__main__"], sys.argv = main, ["main.py"]
    sys.stdout.reconfigure(line_buffering=True)  # lines printed before a CPU-limit kill still come back
    try:
        with open("main.py", "rb") as f:
            source = f.read()
        exec(compile(source, "main.py", "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # without this bootstrap's frame
        sys.exit(1)


_guard(*(int(a) for a in sys.argv[1:5]))
del _guard
_run()
'''

_MAX_ERROR_CHARS = 300  # the error line the model sees; the whole message is in SandboxResult.stderr
_LINE = re.compile(r'File "main\.py", line (\d+)')


@dataclass(frozen=True)
class SandboxResult:
    """What one run produced. ``ok`` is True iff the program ran to the end (exit status 0) within its limits.

    ``stdout`` is the head of what it printed (at most ``max_output_chars``; ``truncated`` says whether more was
    cut), ``stderr`` the tail of its error stream, ``error`` one line for a failed run: the traceback's last line
    with the program's line number, a timeout, or a crash.
    """

    stdout: str
    stderr: str
    ok: bool
    error: str | None
    timed_out: bool
    truncated: bool
    returncode: int | None


def run_python(code: str, *, cpu_s: float = 2.0, memory_mb: int = 256, max_output_chars: int = 4000,
               wall_s: float = 5.0) -> SandboxResult:
    """Run ``code`` as a Python program in a fresh sandboxed process (see the module doc); never raises on ``code``.

    ``cpu_s`` is rounded up to whole seconds (the kernel's unit); ``wall_s`` also covers interpreter start-up
    (~20 ms).

    >>> r = run_python("print(sum(range(1, 101)))")
    >>> r.ok, r.stdout, r.error
    (True, '5050\\n', None)
    >>> run_python("print(1 / 0)").error
    'ZeroDivisionError: division by zero (line 1)'
    """
    problems = [f"{name} must be > 0, got {value!r}" for name, value in
                (("cpu_s", cpu_s), ("memory_mb", memory_mb), ("max_output_chars", max_output_chars),
                 ("wall_s", wall_s)) if not (isinstance(value, (int, float)) and value > 0)]
    if problems:
        raise ValueError("invalid sandbox limits: " + "; ".join(problems) + ". Fix: pass positive numbers")
    if not isinstance(code, str):
        return _failed(f"code must be a string, got {type(code).__name__}")
    if len(code) > MAX_CODE_CHARS:
        return _failed(f"program too long ({len(code)} characters; at most {MAX_CODE_CHARS})")
    try:
        with tempfile.TemporaryDirectory(prefix="agentrl-python-") as home:
            return _run_in(home, code, cpu_s=cpu_s, memory_mb=memory_mb, max_chars=int(max_output_chars),
                           wall_s=wall_s)
    except Exception as e:  # a sandbox that cannot start costs the episode one tool call, not the rollout worker
        return _failed(f"the sandbox could not run the program: {type(e).__name__}: {e}")


def _run_in(home: str, code: str, *, cpu_s: float, memory_mb: int, max_chars: int, wall_s: float) -> SandboxResult:
    Path(home, "main.py").write_bytes(code.encode("utf-8", "surrogatepass"))  # bad text becomes a SyntaxError there
    cpu = max(1, math.ceil(cpu_s))
    argv = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOTSTRAP,
            str(cpu), str(int(memory_mb * 2**20)), str(FILE_BYTES), str(MAX_OPEN_FILES)]
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home, "TMPDIR": home}
    deadline = time.monotonic() + wall_s
    proc = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    killed = False
    try:
        out, dropped, err = _collect(proc, deadline, cap=4 * max_chars + 4)  # bytes for max_chars UTF-8 characters
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    finally:
        if proc.poll() is None:  # past the wall limit (or we are unwinding): the whole group goes, unreaped yet
            killed = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    stdout = out.decode("utf-8", "replace")
    truncated = dropped > 0 or len(stdout) > max_chars
    stderr = err.decode("utf-8", "replace")
    rc = proc.returncode
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
        error = _error_line(stderr, rc, memory_mb)  # from the whole kept tail: a long last line keeps its start
    else:
        error = None
    return SandboxResult(stdout=stdout[:max_chars], stderr=stderr[-max_chars:], ok=error is None, error=error,
                         timed_out=killed or cpu_limit, truncated=truncated, returncode=rc)


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, int, bytes]:
    """Read both pipes until EOF or the deadline: the head of stdout (+ how many bytes were dropped), the tail of
    stderr. Output past the cap is read and discarded rather than left in the pipe, so a chatty program runs to its
    end (closing the pipe instead would turn long output into a BrokenPipeError) and memory stays bounded.
    """
    head, tail, dropped = bytearray(), bytearray(), 0
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    room = max(0, cap - len(head))
                    head += chunk[:room]
                    dropped += len(chunk) - min(room, len(chunk))
                else:
                    tail += chunk
                    del tail[:-cap]
    return bytes(head), dropped, bytes(tail)


def _error_line(stderr: str, rc: int, memory_mb: int) -> str:
    """The traceback's last line with the program's line number, e.g. ``ZeroDivisionError: division by zero
    (line 3)``; the exit status when the program wrote nothing to stderr.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return f"the program exited with status {rc}"
    last = lines[-1] if len(lines[-1]) <= _MAX_ERROR_CHARS else lines[-1][:_MAX_ERROR_CHARS] + " ..."
    where = _LINE.findall(stderr)
    if where:
        last += f" (line {where[-1]})"
    if last.startswith("MemoryError"):
        last += f"; the memory limit is {memory_mb} MB"
    return last


def _failed(message: str) -> SandboxResult:
    return SandboxResult(stdout="", stderr="", ok=False, error=message, timed_out=False, truncated=False,
                         returncode=None)
