"""A `ray start --head` cluster of its own for the `ray job submit` tests, and the submit helper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_cluster(request, tmp_path):
    """A `ray start --head` cluster of its own. `ray stop` would kill every Ray process on the machine, the test
    session's cluster included, so the head runs with --block in its own process group and only that is stopped.
    Extra `ray start` flags come by indirect parametrization, e.g.
    ``@pytest.mark.parametrize("head_cluster", [["--num-gpus=0"]], indirect=True)``."""
    extra = list(getattr(request, "param", []))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    # Every per-node agent port on a free port of its own: the session's cluster already holds the defaults, and a
    # clash leaves this head without a job agent ("No available agent to submit job").
    agent_ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                   f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
                   f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"]
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                             f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
                             "--disable-usage-stats", *agent_ports, *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                             capture_output=True, timeout=60).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(2)
        yield env, address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def submit(env: dict, address: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir <repo> -- python <args>`, waiting for the job; retries the agent's start-up."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--", "python",
           *args]
    for _ in range(20):  # the dashboard answers before its job agent is ready; that refusal is transient
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if "No available agent to submit job" not in proc.stderr:
            return proc
        time.sleep(2)
    return proc
