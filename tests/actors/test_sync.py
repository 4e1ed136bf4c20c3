"""Adapter sync after a real learner step: every worker serves the new version, verified; a skipped sync is caught."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.config import ENGINE_DTYPES
from actors.rollout_pool import RolloutPool, SyncError, verify_sync
from envs.calculator import generate_tasks
from learners.config import LearnerConfig
from learners.learner import Learner
from learners.sync import choose_probe, push_adapter

TOL = ENGINE_DTYPES["float32"]


def test_verify_sync_rules():
    info = [{"worker_index": 0, "version": 3, "checksum": "abc"}]
    after, before = [-1.0, -2.0, -0.5], [-1.2, -2.3, -0.6]
    report = verify_sync(info, 3, "abc", after, before, [after], [before], tolerance=TOL)
    assert report["probe_discriminating"] == 1.0 and report["probe_delta_error"] == 0.0
    with pytest.raises(SyncError, match="worker 0 serves version 3 checksum abc, expected version 3 checksum xyz"):
        verify_sync(info, 3, "xyz", after, before, [after], [before], tolerance=TOL)
    with pytest.raises(SyncError, match="not in effect"):  # the engine still serves the old policy
        verify_sync(info, 3, "abc", after, before, [before], [before], tolerance=(1.0, TOL[1]))
    unmoved = verify_sync(info, 3, "abc", before, before, [before], [before], tolerance=TOL)
    assert unmoved["probe_discriminating"] == 0.0  # nothing changed, nothing to catch: passes
    # a replacement that joined after the load has no "before": checked against the learner's "after" alone
    assert verify_sync(info, 3, "abc", after, before, [after], [None], tolerance=TOL)["probe_delta_error"] == 0.0
    with pytest.raises(SyncError, match="probe logprobs differ from the learner's"):
        verify_sync(info, 3, "abc", after, before, [before], [None], tolerance=TOL)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_sync_after_a_learner_step_is_verified_and_a_skipped_one_is_caught(ray_cluster, rollout_worker, model_path):
    from actors.remote import start_reward_actor
    from rewards.config import RewardConfig

    get = ray_cluster.get
    pool = ray_cluster.remote(RolloutPool).options(num_cpus=0.1, max_concurrency=4).remote(
        [rollout_worker], start_reward_actor(RewardConfig()), generate_tasks(16, seed=4), tasks_per_step=2, seed=0)
    try:
        learner = Learner(LearnerConfig(), model_path, temperature=1.0)  # default learning rate
        batch, _ = get(pool.get_batch.remote(0))
        # The untrained model rarely earns reward; give the group spread so the update has a direction.
        batch = [replace(t, reward=float(i % 2)) for i, t in enumerate(batch)]
        probe = choose_probe(batch, learner)
        learner.update(batch)
        report = push_adapter(learner, pool, probe)
        served = get(pool.serving.remote())
        assert [s["version"] for s in served] == [report["version"]] and served[0]["checksum"] == report["checksum"]
        assert report["probe_delta_error"] < TOL[1] and report["probe_error"] < TOL[0]
        # the probe is discriminating: the learner's own change is far above the tolerance
        assert report["probe_change"] > 3 * TOL[1] and report["probe_discriminating"] == 1.0
        # the episode was sampled by the version served before the sync, at temperature 1: its behavior logprobs
        # were the workers' "before", with no probe call (the next probe's batch is a version old: probed again)
        assert report["sync_before_from_behavior"] == 1.0 and probe[3][0] == 0
        probe = choose_probe(batch, learner)
        learner.update(batch)
        with pytest.raises(Exception, match="not in effect|expected version"):
            push_adapter(learner, pool, probe, skip_load=True)
    finally:
        get(rollout_worker.use_version.remote(0))
        ray_cluster.kill(pool)
