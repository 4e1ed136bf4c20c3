"""jobs.rollout end to end: submitted with `ray job submit` to a `ray start --head` cluster (token auth on)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors.trajectory import check_invariants, read_parquet
from tests.jobs.conftest import REPO, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.mark.slow  # the default suite submits jobs.train the same way (tests/jobs/test_learning.py)
def test_rollout_job_under_ray_job_submit(head_cluster, tmp_path, tokenizer):
    env, address = head_cluster
    storage = tmp_path / "runs"
    proc = submit(env, address, ["-m", "jobs.rollout", "--config", "configs/rollout.yaml", "tasks.num_tasks=3",
                                 f"run.storage={storage}", "rollout.max_tokens_per_turn=48"], timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    (run_dir,) = storage.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 3
    trajs = read_parquet(run_dir / "trajectories" / "rollout.parquet")
    assert len(trajs) == 3 and all(check_invariants(t) == [] for t in trajs)
    assert "rollout:" in (run_dir / "config.yaml").read_text()  # the resolved config is saved with the run


def test_env_flag_picks_the_envs_own_config():
    import doctest

    from jobs import rollout

    assert doctest.testmod(rollout).failed == 0 and doctest.testmod(rollout).attempted >= 3


def test_rollout_job_rejects_bad_config_before_starting_actors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jobs.rollout", "rollout.temperature=-1", "rollout.max_turns=0",
                           "tasks.env=nope", f"run.storage={tmp_path}"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    for field in ("rollout.temperature", "rollout.max_turns", "tasks.env"):
        assert field in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
