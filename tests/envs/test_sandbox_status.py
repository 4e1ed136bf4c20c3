"""The sandbox's measured status and its policy: refuse to run code when a layer is missing, unless the weaker
audit-hook mode is chosen explicitly. The missing-capability case is real: a child worker with CAP_SYS_ADMIN
dropped from its bounding set (``setpriv``), as in a container that does not grant it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from envs import sandbox_status as status_module
from envs.sandbox import run_python, sandbox_mode, sandbox_status
from envs.sandbox_status import LAYERS

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
CAP_SYS_ADMIN = 21


def has_cap_sys_admin() -> bool:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return bool(int(fields["CapEff"], 16) >> CAP_SYS_ADMIN & 1)


ROOT_WITH_SYS_ADMIN = pytest.mark.skipif(os.geteuid() != 0 or not has_cap_sys_admin(),
                                         reason="needs root with CAP_SYS_ADMIN (what CI has)")


@ROOT_WITH_SYS_ADMIN
def test_every_layer_is_measured_in_place_as_root():
    status = sandbox_status(refresh=True)
    assert status.complete and status.missing == [] and status.error is None, status.table()
    assert set(status.layers) == set(LAYERS) and all(status.details[name] for name in LAYERS)
    assert "NO" not in status.table()


@ROOT_WITH_SYS_ADMIN
def test_a_bad_probe_result_is_judged_missing(monkeypatch):
    """The judge reads what the probe saw: a root uid, an interface besides lo, a wrong limit count as missing."""
    probe = status_module._PROBE
    monkeypatch.setattr(status_module, "_PROBE", probe.replace("os.getuid()", "0"))
    assert "unprivileged user" in status_module.probe().missing
    monkeypatch.setattr(status_module, "_PROBE", probe.replace("[name for _, name in socket.if_nameindex()]",
                                                               "['lo', 'eth0']"))
    assert status_module.probe().missing == ["network namespace"]
    monkeypatch.setattr(status_module, "_PROBE", probe.replace('"RLIMIT_" + n.upper()',
                                                               '"RLIMIT_" + n.upper().replace("NPROC", "STACK")'))
    assert status_module.probe().missing == ["rlimits"]


@ROOT_WITH_SYS_ADMIN
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_sys_admin_the_tool_refuses_and_says_how_to_fix_it():
    code = ("from envs.python_env import PythonEnv, generate_tasks\nfrom envs.tool_calls import ToolCall\n"
            "env = PythonEnv()\nenv.reset(generate_tasks(1, seed=0)[0])\n"
            "print(env.step(ToolCall('python', {'code': 'print(6 * 7)'}, raw='', strict=True)).observation)")
    cmd = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", sys.executable, "-c", code]
    env = {k: v for k, v in os.environ.items() if k != "AGENTRL_SANDBOX"}
    refused = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.startswith("error: sandbox unavailable: missing every layer (unshare(mount, PID, network, "
                                     "IPC, UTS namespaces): Operation not permitted); the program was not run. Fix:")
    assert "CAP_SYS_ADMIN" in refused.stdout and "AGENTRL_SANDBOX=audit-hook" in refused.stdout
    weaker = subprocess.run(cmd, cwd=REPO, env={**env, "AGENTRL_SANDBOX": "audit-hook"}, capture_output=True,
                            text=True, timeout=60)
    assert weaker.stdout == "42\n", weaker.stderr  # chosen explicitly: runs, with the audit hook and rlimits


def test_the_mode_variable(monkeypatch):
    monkeypatch.delenv("AGENTRL_SANDBOX", raising=False)
    assert sandbox_mode() == "isolated"
    monkeypatch.setenv("AGENTRL_SANDBOX", "audit-hook")
    assert sandbox_mode() == "audit-hook"
    same_user = run_python("import os\nprint(os.getuid())", wall_s=30)
    assert same_user.stdout == f"{os.getuid()}\n"  # the weaker mode: the worker's own user
    with pytest.raises(ValueError, match="audit_hook=False needs the isolated sandbox"):
        run_python("print(1)", audit_hook=False)
    monkeypatch.setenv("AGENTRL_SANDBOX", "off")
    with pytest.raises(ValueError, match=r"AGENTRL_SANDBOX='off' is not a sandbox mode. Fix: set it to 'isolated'"):
        run_python("print(1)")


@ROOT_WITH_SYS_ADMIN
def test_isolated_runs_as_a_fresh_uid_per_call(monkeypatch):
    monkeypatch.delenv("AGENTRL_SANDBOX", raising=False)
    uids = {run_python("import os\nprint(os.getuid())", wall_s=30).stdout for _ in range(3)}
    assert len(uids) == 3 and all(int(u) >= 2_000_000_000 for u in uids)
