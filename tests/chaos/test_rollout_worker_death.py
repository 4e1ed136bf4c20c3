"""``kill -9`` of a rollout worker mid-step, with the real engine: the pool reaps the dead engine's processes, starts a
replacement that serves the current adapter version before it takes work, plays the lost episodes again, and the
step returns the full batch; the next step runs normally. A worker dead when an adapter sync reaches it is replaced
inside the sync, which then verifies the new version on the replacement. Once the replacements allowed are used up,
the next death ends the step with an error that names the fix.
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
from actors.worker_recovery import WorkerLostError
from envs.calculator import generate_tasks

# slow: a second engine start and a replacement (~3 min); CI runs it in its second stage (.ci/run)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TASKS_PER_STEP, SAMPLES = 8, 2


def _alive(tree: dict) -> list[int]:
    """Processes of a recorded tree that still run (same pid and start time)."""
    alive = []
    for pid, started in [[tree["pid"], None], *tree["children"]]:
        try:
            proc = psutil.Process(pid)
            if started is None or abs(proc.create_time() - started) < 0.01:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def _kill_when_generating(tree: dict) -> None:
    """SIGKILL the worker once its engine is busy with the step's episodes (mid-step, not before or after)."""
    engine = [psutil.Process(pid) for pid, _ in tree["children"]] + [psutil.Process(tree["pid"])]
    for p in engine:
        p.cpu_percent(interval=None)  # the first reading only starts the measurement
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if sum(p.cpu_percent(interval=None) for p in engine) > 50:
            break
    time.sleep(1.0)
    os.kill(tree["pid"], signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_its_episodes_replayed(ray_cluster, model_path, rollout_cfg, tmp_path):
    from tests.actors.pools import respawning_pool, serve_fresh_adapter

    get = ray_cluster.get
    cfg = replace(rollout_cfg, num_workers=1, samples_per_task=SAMPLES, max_turns=2, max_tokens_per_turn=96,
                  max_worker_restarts=2)
    workers, pool = respawning_pool(model_path, cfg, generate_tasks(32, seed=5), tasks_per_step=TASKS_PER_STEP,
                                    out_dir=str(tmp_path / "trajectories"))
    try:
        files, version = serve_fresh_adapter(pool, model_path, cfg.temperature)  # a replacement must serve this
        (dead,) = get(pool.serving.remote())
        tree = get(workers[0].process_tree.remote())
        assert tree["children"], "the engine runs in child processes: what an orphan would be"

        started = time.monotonic()
        step = pool.get_batch.remote(0)
        _kill_when_generating(tree)
        batch, timings = get(step)
        print(f"\nstep with a kill -9 mid-step: {time.monotonic() - started:.1f} s, {timings}")

        assert timings["worker_deaths"] == 1 and timings["workers_replaced"] == 1
        assert timings["episodes_rerun"] == TASKS_PER_STEP * SAMPLES
        assert len(batch) == TASKS_PER_STEP * SAMPLES  # the full batch, nothing lost
        assert set(Counter(t.task_id for t in batch).values()) == {SAMPLES}
        assert {t.policy_version for t in batch} == {version}
        deadline = time.monotonic() + 30
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(tree) == [], "the dead worker's engine processes outlived it"

        (now,) = get(pool.serving.remote())
        assert now["pid"] != dead["pid"] and now["version"] == version and now["checksum"] == checksum(files)

        batch, timings = get(pool.get_batch.remote(1))  # the run goes on with the replacement
        assert len(batch) == TASKS_PER_STEP * SAMPLES and timings["worker_deaths"] == 1

        # A worker dead when the sync reaches it: replaced inside the sync, which then verifies the new version.
        os.kill(now["pid"], signal.SIGKILL)
        files, version = serve_fresh_adapter(pool, model_path, cfg.temperature)
        (after_sync,) = get(pool.serving.remote())
        assert after_sync["pid"] != now["pid"] and after_sync["version"] == version
        assert after_sync["checksum"] == checksum(files)
        batch, timings = get(pool.get_batch.remote(2))
        assert len(batch) == TASKS_PER_STEP * SAMPLES and {t.policy_version for t in batch} == {version}
        assert timings["worker_deaths"] == 2 and timings["workers_replaced"] == 2

        os.kill(after_sync["pid"], signal.SIGKILL)  # max_worker_restarts=2 is used up
        with pytest.raises(WorkerLostError, match="may not replace it.*Fix: raise rollout.max_worker_restarts"):
            get(pool.get_batch.remote(3))
    finally:
        ray_cluster.kill(pool)
        for w in workers:
            ray_cluster.kill(w)
