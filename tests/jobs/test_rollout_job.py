"""jobs.rollout end to end: submitted with `ray job submit` to a `ray start --head` cluster (token auth on)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                    "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=120)
    try:
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_rollout_job_under_ray_job_submit(head_cluster, tmp_path, tokenizer):
    env, address = head_cluster
    storage = tmp_path / "runs"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           "python", "-m", "jobs.rollout", "--config", "configs/rollout.yaml",
           "tasks.num_tasks=3", f"run.storage={storage}", "rollout.max_tokens_per_turn=48"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360, cwd=REPO)
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
