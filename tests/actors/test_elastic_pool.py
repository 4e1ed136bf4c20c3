"""Elastic rollout pool with real engines, in async mode (the producer plays ahead while the pool changes):

- a worker that finds no room within the placement timeout is not waited for: the pool stays as it is (counted);
- a worker that dies while another job takes its room is left out (the autoscaler scale-down case): its engine is
  reaped, its episodes are played again on the workers left, and the pool goes on with one worker fewer;
- a worker added between steps serves the current adapter version (its checksum) before it takes work, and a removed
  worker finishes its queued episodes before its engine processes are reaped.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import replace

import psutil
import pytest

from actors.adapters import checksum
from envs.calculator import generate_tasks

# slow: three engine starts (~3 min); CI runs it in its second stage (.ci/run)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TASKS_PER_STEP, SAMPLES, PLACEMENT_TIMEOUT_S = 4, 2, 5.0


class Holder:
    """Another job's actor: it only holds the CPUs it asked for."""

    def ready(self) -> bool:
        return True


def _gone(pid: int, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not psutil.pid_exists(pid)


def _full(batch: list) -> bool:
    return len(batch) == TASKS_PER_STEP * SAMPLES and set(Counter(t.task_id for t in batch).values()) == {SAMPLES}


def test_workers_left_out_added_and_removed_while_the_producer_plays(ray_cluster, model_path, rollout_cfg,
                                                                     tmp_path):
    from tests.actors.pools import respawning_pool, serve_fresh_adapter

    ray = ray_cluster
    get = ray.get
    cfg = replace(rollout_cfg, num_workers=2, samples_per_task=SAMPLES, max_turns=2, max_tokens_per_turn=48,
                  num_cpus_per_worker=0.5, kv_cache_gib=1.0, max_worker_restarts=2)
    workers, pool = respawning_pool(model_path, cfg, generate_tasks(48, seed=6), tasks_per_step=TASKS_PER_STEP,
                                    out_dir=str(tmp_path / "trajectories"), max_staleness=1, last_step=7,
                                    placement_timeout_s=PLACEMENT_TIMEOUT_S)
    others = []
    try:
        files, version = serve_fresh_adapter(pool, model_path, cfg.temperature)
        assert _full(get(pool.get_batch.remote(0))[0])

        # No room for a third worker (another job holds every free CPU): the resize stops at the timeout.
        free = ray.available_resources().get("CPU", 0.0)
        others.append(ray.remote(Holder).options(num_cpus=max(0.0, free - 0.25)).remote())  # < 0.5 CPU left
        get(others[-1].ready.remote(), timeout=60)
        started = time.monotonic()
        assert len(get(pool.resize.remote(3))) == 2
        assert time.monotonic() - started < PLACEMENT_TIMEOUT_S + 30, "the resize waited past the placement timeout"

        # Worker 1 dies and the other job takes its room at once: the replacement finds none, the pool shrinks.
        others.append(ray.remote(Holder).options(num_cpus=cfg.num_cpus_per_worker).remote())  # waits for room
        dead = get(pool.serving.remote())[1]
        os.kill(dead["pid"], signal.SIGKILL)
        get(others[-1].ready.remote(), timeout=60)
        for step in (1, 2, 3):  # step 3 was played after the kill, so the death was met by then
            batch, timings = get(pool.get_batch.remote(step))
            assert _full(batch) and {t.policy_version for t in batch} == {version}
        print(f"\nafter the death: {timings}")
        assert timings["worker_deaths"] == 1 and timings["workers_dropped"] == 1
        assert timings["workers_replaced"] == 0 and timings["workers_not_placed"] == 1
        assert [s["worker_index"] for s in get(pool.serving.remote())] == [0]
        assert _gone(dead["pid"]), "the dead worker's process outlived it"

        # Room again: a worker joins in the free slot, serving the current version before it takes work.
        for actor in others:
            ray.kill(actor)
        served = get(pool.resize.remote(2))
        assert [s["worker_index"] for s in served] == [0, 1]
        assert all(s["version"] == version and s["checksum"] == checksum(files) for s in served)
        for step in (4, 5):
            assert _full(get(pool.get_batch.remote(step))[0])

        added = get(pool.serving.remote())[1]
        assert len(get(pool.resize.remote(1))) == 1
        assert _gone(added["pid"]), "the removed worker's process outlived the resize"
        batch, timings = get(pool.get_batch.remote(6))
        assert _full(batch) and timings["worker_deaths"] == 1
    finally:
        for actor in [pool, *workers, *others]:
            ray.kill(actor)
