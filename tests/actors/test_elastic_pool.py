"""Elastic rollout pool with real engines: a worker added between steps serves the current adapter version (its
checksum) before it takes work, the next step's episodes are spread over both workers, and a removed worker's engine
processes are gone."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import psutil
import pytest

from actors.adapters import checksum
from envs.calculator import generate_tasks

# slow: two engines at once (~2 min of engine starts); CI runs it in its second stage (.ci/run)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TASKS_PER_STEP, SAMPLES = 4, 2


def test_workers_added_and_removed_between_steps(ray_cluster, model_path, rollout_cfg, tmp_path):
    from actors.remote import start_reward_actor, start_rollout_pool, start_rollout_workers
    from learners.config import LearnerConfig
    from learners.learner import Learner
    from learners.sync import push_adapter
    from rewards.config import RewardConfig

    get = ray_cluster.get
    cfg = replace(rollout_cfg, num_workers=1, samples_per_task=SAMPLES, max_turns=2, max_tokens_per_turn=48,
                  num_cpus_per_worker=0.5, kv_cache_gib=1.0)
    workers = start_rollout_workers(model_path, cfg)
    pool = start_rollout_pool(workers, start_reward_actor(RewardConfig()), generate_tasks(32, seed=6),
                              tasks_per_step=TASKS_PER_STEP, seed=0, engine_dtype=cfg.dtype,
                              out_dir=str(tmp_path / "trajectories"), respawn=(model_path, cfg))
    try:
        learner = Learner(LearnerConfig(), model_path, temperature=cfg.temperature)
        files = learner.adapter_files()
        version = push_adapter(learner, pool)["version"]
        del learner
        get(pool.get_batch.remote(0))

        served = get(pool.resize.remote(2))
        assert [s["worker_index"] for s in served] == [0, 1]
        assert all(s["version"] == version and s["checksum"] == checksum(files) for s in served)
        batch, _ = get(pool.get_batch.remote(1))
        assert len(batch) == TASKS_PER_STEP * SAMPLES and set(Counter(t.task_id for t in batch).values()) == {SAMPLES}
        assert {t.policy_version for t in batch} == {version}

        added = get(pool.serving.remote())[1]
        assert len(get(pool.resize.remote(1))) == 1
        deadline = time.monotonic() + 30
        while psutil.pid_exists(added["pid"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not psutil.pid_exists(added["pid"]), "the removed worker's process outlived the resize"
        batch, timings = get(pool.get_batch.remote(2))
        assert len(batch) == TASKS_PER_STEP * SAMPLES and timings["engine_processes_reaped"] >= 0
    finally:
        ray_cluster.kill(pool)
        for w in workers:
            ray_cluster.kill(w)
