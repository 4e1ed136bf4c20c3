"""Which layers of the isolated sandbox are really in place on this machine, measured by running a probe in it.

Nothing is inferred from the configuration: the probe program runs through the isolated launch path with the audit
hook off and reports what it sees from the inside (its uids and capability sets, its namespaces compared with the
worker's, the root directory, network interfaces and a connection attempt to a listener on the worker's loopback,
its rlimits, descriptors and environment); a second run checks the audit hook. ``envs.sandbox`` refuses to run code
in the ``isolated`` mode unless every layer is measured in place. See a machine's table with
``python -c "from envs.sandbox import sandbox_status; print(sandbox_status().table())"``.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import threading
from dataclasses import dataclass, field

from envs import sandbox_process as sp

__all__ = ["SandboxStatus", "sandbox_status", "LAYERS"]

LAYERS = ("unprivileged user", "no capabilities", "PID namespace", "mount namespace with a private read-only root",
          "network namespace", "IPC namespace", "UTS namespace", "rlimits", "no inherited descriptors or environment",
          "audit hook")
_PROBE_CPU_S, _PROBE_MEMORY_MB, _PROBE_WALL_S = 2, 256, 30.0  # roomy wall: a loaded machine must not fail the probe
_NAMESPACES = ("mnt", "pid", "net", "ipc", "uts")

_PROBE = r"""
import json, os, resource, socket
out = {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "groups": os.getgroups(), "pid": os.getpid()}
fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
out["caps"] = {k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
out["ns"] = {n: os.readlink("/proc/self/ns/" + n) for n in NAMESPACES}
out["root"] = sorted(os.listdir("/"))
try:
    open("/probe-write", "w")
    out["root_write"] = "written"
except OSError as e:
    out["root_write"] = e.errno
out["interfaces"] = [name for _, name in socket.if_nameindex()]
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    out["connect"] = "connected"
except OSError as e:
    out["connect"] = e.errno
out["limits"] = {n: resource.getrlimit(getattr(resource, "RLIMIT_" + n.upper()))[1]
                 for n in ("cpu", "as", "fsize", "nproc", "nofile", "core")}
out["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
out["env"] = sorted(os.environ)
out["hostname"] = socket.gethostname()
print(json.dumps(out))
"""
_HOOK_PROBE = "import socket\ntry:\n    socket.socket()\nexcept PermissionError as e:\n    print('refused:', e)"


@dataclass(frozen=True)
class SandboxStatus:
    """``layers``: each of ``LAYERS`` -> measured in place; ``details``: what was measured; ``error``: why the probe
    could not run at all (then every layer is missing)."""

    layers: dict[str, bool]
    details: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return all(self.layers.get(name, False) for name in LAYERS)

    @property
    def missing(self) -> list[str]:
        return [name for name in LAYERS if not self.layers.get(name, False)]

    def refusal(self) -> str:
        """The observation the python tool returns instead of running code when a layer is missing."""
        why = f" ({self.error})" if self.error else ""
        missing = "every layer" if len(self.missing) == len(LAYERS) else ", ".join(self.missing)
        return (f"sandbox unavailable: missing {missing}{why}; the program was not run. Fix: run the "
                "worker as root with CAP_SYS_ADMIN (a container needs it, and a seccomp/AppArmor profile that allows "
                "unshare and mount), or set AGENTRL_SANDBOX=audit-hook to accept the weaker audit-hook-only sandbox "
                "(a laptop, a trusted policy; docs/reliability.md)")

    def table(self) -> str:
        rows = [f"| {name} | {'yes' if self.layers.get(name) else 'NO'} | {self.details.get(name, '')} |"
                for name in LAYERS]
        head = ["| layer | in place | measured |", "|---|---|---|"]
        tail = [f"\nprobe error: {self.error}"] if self.error else []
        return "\n".join(head + rows + tail)


_lock = threading.Lock()


@functools.cache
def _cached() -> SandboxStatus:
    return probe()


def sandbox_status(refresh: bool = False) -> SandboxStatus:
    """The measured status, probed once per process (~0.2 s) unless ``refresh``."""
    with _lock:
        if refresh:
            _cached.cache_clear()
        return _cached()


def probe() -> SandboxStatus:
    """Run the probe programs in the isolated sandbox now and judge each layer from what they report."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = _PROBE.replace("NAMESPACES", repr(_NAMESPACES)).replace("PORT", str(port))
        run = sp.execute(code, cpu_s=_PROBE_CPU_S, memory_mb=_PROBE_MEMORY_MB, max_chars=20_000,
                         wall_s=_PROBE_WALL_S, isolated=True, audit_hook=False)
        try:
            listener.accept()[0].close()
            reached = True
        except BlockingIOError:
            reached = False
    if not run.ok:
        reason = str(run.error).removeprefix("sandbox unavailable: ").split(". Fix:")[0]
        return SandboxStatus({name: False for name in LAYERS}, error=reason)
    try:
        seen = json.loads(run.stdout)
    except ValueError:
        return SandboxStatus({name: False for name in LAYERS}, error=f"unreadable probe output: {run.stdout[:200]!r}")
    hook = sp.execute(_HOOK_PROBE, cpu_s=_PROBE_CPU_S, memory_mb=_PROBE_MEMORY_MB, max_chars=2000,
                      wall_s=_PROBE_WALL_S, isolated=True, audit_hook=True)
    return _judge(seen, reached, hook)


def _judge(seen: dict, reached: bool, hook: sp.SandboxResult) -> SandboxStatus:
    host_ns = {n: os.readlink(f"/proc/self/ns/{n}") for n in _NAMESPACES}
    fresh = {n: seen["ns"][n] != host_ns[n] for n in _NAMESPACES}
    caps = seen["caps"]
    binds, links = sp.jail_layout()
    expected_root = {p.strip("/").split("/")[0] for p in (*binds, *links)} | {"dev", "proc", "tmp"}
    expected_root |= {os.path.realpath(os.environ.get("TMPDIR", "/tmp")).strip("/").split("/")[0]}
    limits = {"cpu": _PROBE_CPU_S + 1, "as": _PROBE_MEMORY_MB << 20, "fsize": sp.FILE_BYTES,
              "nproc": sp.MAX_PROCESSES, "nofile": sp.MAX_OPEN_FILES, "core": 0}
    allowed_env = {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "LC_CTYPE"}  # -X utf8 may set LC_CTYPE
    checks = {
        "unprivileged user": (all(i != 0 for i in seen["ids"]) and not seen["groups"],
                              f"uid/euid/gid/egid {seen['ids']}, groups {seen['groups']}"),
        "no capabilities": (all(int(caps[k], 16) == 0 for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb"))
                            and caps["NoNewPrivs"] == "1",
                            f"CapEff {caps['CapEff']}, CapBnd {caps['CapBnd']}, NoNewPrivs {caps['NoNewPrivs']}"),
        "PID namespace": (fresh["pid"] and seen["pid"] <= 3, f"own pid {seen['pid']}, {seen['ns']['pid']}"),
        "mount namespace with a private read-only root": (
            fresh["mnt"] and set(seen["root"]) <= expected_root and seen["root_write"] == errno.EROFS,
            f"/ holds {seen['root']}; writing /x: {_errno(seen['root_write'])}"),
        "network namespace": (fresh["net"] and seen["interfaces"] == ["lo"] and seen["connect"] != "connected"
                              and not reached, f"interfaces {seen['interfaces']}; connect to the worker's "
                              f"loopback: {_errno(seen['connect'])}"),
        "IPC namespace": (fresh["ipc"], seen["ns"]["ipc"]),
        "UTS namespace": (fresh["uts"] and seen["hostname"] == "sandbox", f"hostname {seen['hostname']!r}"),
        "rlimits": (seen["limits"] == limits, ", ".join(f"{k} {v}" for k, v in seen["limits"].items())
                    + " (hard limits)"),
        "no inherited descriptors or environment": (
            set(seen["fds"]) <= {0, 1, 2, 3} and set(seen["env"]) <= allowed_env,  # 3: listdir's own descriptor
            f"descriptors {seen['fds']}, environment {seen['env']}"),
        "audit hook": (hook.ok and hook.stdout.startswith("refused: network access"), hook.stdout.strip()[:80]
                       or str(hook.error)),
    }
    return SandboxStatus({k: bool(v[0]) for k, v in checks.items()}, {k: v[1] for k, v in checks.items()})


def _errno(value) -> str:
    return errno.errorcode.get(value, str(value)) if isinstance(value, int) else str(value)

