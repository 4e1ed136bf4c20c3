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
    from tests.actors.pools import respawning_pool, serve_fresh_adapter

    get = ray_cluster.get
    cfg = replace(rollout_cfg, num_workers=1, samples_per_task=SAMPLES, max_turns=2, max_tokens_per_turn=48,
                  num_cpus_per_worker=0.5, kv_cache_gib=1.0)
    workers, pool = respawning_pool(model_path, cfg, generate_tasks(32, seed=6), tasks_per_step=TASKS_PER_STEP,
                                    out_dir=str(tmp_path / "trajectories"))
    try:
        files, version = serve_fresh_adapter(pool, model_path, cfg.temperature)
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
