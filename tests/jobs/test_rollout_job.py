"""jobs.rollout end to end: submitted with `ray job submit` to a `ray start --head` cluster (token auth on)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.trajectory import check_invariants, read_parquet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_cluster(tmp_path):
    """A `ray start --head` cluster of its own. `ray stop` would kill every Ray process on the machine, the test
    session's cluster included, so the head runs with --block in its own process group and only that is stopped."""
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
                             "--disable-usage-stats", *agent_ports], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
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


def test_rollout_job_under_ray_job_submit(head_cluster, tmp_path, tokenizer):
    env, address = head_cluster
    storage = tmp_path / "runs"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           "python", "-m", "jobs.rollout", "--config", "configs/rollout.yaml",
           "tasks.num_tasks=3", f"run.storage={storage}", "rollout.max_tokens_per_turn=48"]
    for _ in range(20):  # the dashboard answers before its job agent is ready; that refusal is transient
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360, cwd=REPO)
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    (run_dir,) = storage.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 3
    trajs = read_parquet(run_dir / "trajectories" / "rollout.parquet")
    assert len(trajs) == 3 and all(check_invariants(t) == [] for t in trajs)
    assert "rollout:" in (run_dir / "config.yaml").read_text()  # the resolved config is saved with the run


def test_rollout_job_rejects_bad_config_before_starting_actors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jobs.rollout", "rollout.temperature=-1", "rollout.max_turns=0",
                           "tasks.env=nope", f"run.storage={tmp_path}"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    for field in ("rollout.temperature", "rollout.max_turns", "tasks.env"):
        assert field in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
