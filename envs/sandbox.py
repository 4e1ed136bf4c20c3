"""Run model-written Python in a separate, jailed process: the engine behind the ``python`` env's tool.

Two modes, chosen by the ``AGENTRL_SANDBOX`` environment variable (read on every call):

* ``isolated`` (the default): each call is built from OS mechanisms, layered (``envs/sandbox_setup.py``): new
  PID, mount, network, IPC and UTS namespaces; a private root holding only read-only system libraries and the
  Python install, a fresh ``/proc`` and a size-limited tmpfs as the working directory (the host's files do not
  exist inside); an unprivileged uid of its own with no groups, no capabilities (bounding set emptied) and
  ``no_new_privs``; rlimits (CPU, address space, file size, processes, open files, no core), which now bind
  (``RLIMIT_NPROC`` does not for root); no inherited descriptors and an empty environment; then
  ``python -I -S`` with the audit hook of ``envs/sandbox_bootstrap.py`` as an extra layer. When the call ends,
  the namespace's pid 1 exits and the kernel kills anything the program left running. Before the first call a
  probe measures every layer from the inside (``envs.sandbox_status``); if one is missing (a container without
  CAP_SYS_ADMIN, a non-root worker, macOS) the tool **refuses to run code** and its observation says which layers
  are missing and how to fix it.
* ``audit-hook``: the weaker sandbox, for laptops and trusted policies, chosen explicitly: the same bootstrap
  (rlimits + an audit hook refusing sockets, processes, ctypes and file access outside the temp dir), run as the
  worker's own user in the host's namespaces.

Common to both: a fresh temp dir per call (removed afterwards), a minimal environment (``HOME`` and ``TMPDIR`` in
the temp dir), at most ``max_output_chars`` of stdout (the head) and of stderr (the tail, where a traceback's last
line is) kept, and a kill at the wall-clock limit. ``run_python`` never raises on any code string: every failure is
a ``SandboxResult`` with ``ok=False``; its ``error`` names what stopped the program (a limit, a sandbox rule).

Threat model, honestly. The ``isolated`` mode is meant to contain a policy exploring at temperature 1, and naive
hostile code: an endless loop, a fork bomb, a memory bomb, a flood of output, a download, reading secrets or
writing outside, tampering with the worker. It is not a hardened multi-tenant boundary: the program still talks to
the host kernel directly (no seccomp filter, no user namespace, no cgroup: memory is bounded per process by
``RLIMIT_AS``, so at most ``MAX_PROCESSES`` x ``memory_mb`` per call), so a kernel exploit escapes it. A cluster
running untrusted policies should, in addition, put workers in unprivileged containers without network (Kubernetes
``NetworkPolicy`` deny-all, read-only root filesystem, CPU/memory limits), ideally under gVisor. The
``audit-hook`` mode is defence in depth only: the hook runs inside the sandboxed interpreter, so code that corrupts
that interpreter can switch it off, and the program runs as the worker's user (as root, ``RLIMIT_NPROC`` does not
bind). Measured containment and overhead: docs/reliability.md.
"""

from __future__ import annotations

import os

from envs.sandbox_process import FILE_BYTES, MAX_OPEN_FILES, MAX_PROCESSES, SandboxResult, execute, failed
from envs.sandbox_status import SandboxStatus, sandbox_status

__all__ = ["SandboxResult", "SandboxStatus", "run_python", "sandbox_mode", "sandbox_status", "MAX_CODE_CHARS",
           "MODES", "MODE_VARIABLE", "FILE_BYTES", "MAX_OPEN_FILES", "MAX_PROCESSES"]

MAX_CODE_CHARS = 20_000  # far longer than any program a tool call needs; bounds what a call may write to disk
MODE_VARIABLE = "AGENTRL_SANDBOX"
MODES = ("isolated", "audit-hook")


def sandbox_mode() -> str:
    """The mode ``AGENTRL_SANDBOX`` selects: ``isolated`` (default, also when unset or empty) or ``audit-hook``."""
    value = os.environ.get(MODE_VARIABLE, "").strip() or "isolated"
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE}={value!r} is not a sandbox mode. Fix: set it to 'isolated' (the default: "
                         "namespaces + unprivileged user, needs root with CAP_SYS_ADMIN) or 'audit-hook' (weaker, "
                         "for laptops)")
    return value


def run_python(code: str, *, cpu_s: float = 2.0, memory_mb: int = 256, max_output_chars: int = 4000,
               wall_s: float = 5.0, audit_hook: bool = True) -> SandboxResult:
    """Run ``code`` as a Python program in a fresh sandboxed process (see the module doc); never raises on ``code``.

    ``cpu_s`` is rounded up to whole seconds (the kernel's unit); ``wall_s`` also covers start-up (~50 ms
    isolated). ``audit_hook=False`` leaves the audit hook out, only in the isolated mode: the tests use it to show
    that the OS layers contain hostile code on their own.

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
    isolated = sandbox_mode() == "isolated"
    if not audit_hook and not isolated:
        raise ValueError("audit_hook=False needs the isolated sandbox: with AGENTRL_SANDBOX=audit-hook the hook is "
                         "the only layer. Fix: leave audit_hook on, or use the isolated mode")
    if not isinstance(code, str):
        return failed(f"code must be a string, got {type(code).__name__}")
    if len(code) > MAX_CODE_CHARS:
        return failed(f"program too long ({len(code)} characters; at most {MAX_CODE_CHARS})")
    if isolated:
        status = sandbox_status()
        if not status.complete:
            return failed(status.refusal())
    return execute(code, cpu_s=cpu_s, memory_mb=memory_mb, max_chars=int(max_output_chars), wall_s=wall_s,
                   isolated=isolated, audit_hook=audit_hook)
