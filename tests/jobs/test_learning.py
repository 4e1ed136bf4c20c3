"""The end-to-end chain (DESIGN.md test budget): SFT warm start -> GRPO under `ray job submit` -> paired eval.

The job is the README's main command with a CI-sized step count, submitted to a `ray start --head` cluster. It
warm-starts from the shipped SFT recipe (the session's cached adapter: same recipe hash), evaluates the starting
policy greedily on 128 fixed held-out tasks, trains, evaluates again, and the test asks McNemar's exact test
whether the tasks gained outnumber the tasks lost at p < 0.01. Numbers over several seeds: docs/training.md.
"""

from __future__ import annotations

import json

import pytest

from actors.evaluation import paired
from jobs.checkpoints import latest_checkpoint
from tests.jobs.conftest import submit

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(2400)]
# The rest is configs/train.yaml (6 steps, lr 1e-3). A 1 GiB KV cache holds a step's 32 episodes and leaves room
# on a 23 GiB machine next to the pytest process and two Ray clusters' daemons.
CI_RUN = ["train.checkpoint_every=3", "rollout.kv_cache_gib=1.0"]


def test_grpo_from_the_sft_warm_start_solves_more_held_out_tasks(release_session_engine, head_cluster, sft_adapter,
                                                                 tmp_path):
    env, address = head_cluster
    run_dir = tmp_path / "run"
    proc = submit(env, address, ["-m", "jobs.train", "--config", "configs/train.yaml", f"run.run_dir={run_dir}",
                                 *CI_RUN], timeout=2300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    print(proc.stdout[-2500:])

    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 6] and evals[0]["tasks"] == 128
    test = paired(evals[0]["solved"], evals[-1]["solved"])
    print(f"held-out greedy success {test['before']} -> {test['after']} of 128: +{test['gained']} -{test['lost']}, "
          f"McNemar p = {test['p_value']:.3g}")
    assert test["after"] > test["before"] and test["p_value"] < 0.01

    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and all(h["skipped_update"] == 0 for h in history)
    assert all(h["probe_error"] < 0.002 for h in history)  # every sync verified against the learner
    assert (run_dir / "curves.png").stat().st_size > 0 and len(list((run_dir / "trajectories").iterdir())) == 6
    assert latest_checkpoint(run_dir).name == "step_000006"
