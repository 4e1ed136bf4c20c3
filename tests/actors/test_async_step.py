"""One real async step (issue 6): the rollout pool in async mode with the session's engine and a real learner. While
the learner updates on step 0's batch, the producer plays step 1's with the adapter version it had; the sync queues
behind it; step 1's batch arrives one version stale, carries that version, and the learner trains on it with
truncated importance weights, logged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.rollout_pool import RolloutPool
from envs.calculator import generate_tasks
from learners.config import LearnerConfig
from learners.learner import Learner
from learners.sync import choose_probe, push_adapter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_async_pool_trains_on_a_batch_one_version_stale(ray_cluster, rollout_worker, model_path, tmp_path):
    from actors.remote import start_reward_actor
    from rewards.config import RewardConfig

    get = ray_cluster.get
    pool = ray_cluster.remote(RolloutPool).options(num_cpus=0.1, max_concurrency=8).remote(
        [rollout_worker], start_reward_actor(RewardConfig()), generate_tasks(16, seed=4), tasks_per_step=2, seed=0,
        out_dir=str(tmp_path / "trajectories"), max_staleness=1, last_step=1)
    learner = Learner(LearnerConfig(tis_cap=2.0), model_path, temperature=1.0)
    try:
        start = push_adapter(learner, pool)["version"]  # the run's first adapter version (a fresh LoRA = the base)

        batch0, t0 = get(pool.get_batch.remote(0))
        assert t0["staleness"] == 0 and {t.policy_version for t in batch0} == {start}
        # The untrained model rarely earns reward; give the group spread so the update has a direction.
        batch0 = [replace(t, reward=float(i % 2)) for i, t in enumerate(batch0)]
        probe = choose_probe(batch0, learner)
        learner.update(batch0)  # meanwhile the producer plays step 1 with version `start`
        newer = push_adapter(learner, pool, probe)["version"]
        assert newer == start + 1

        batch1, t1 = get(pool.get_batch.remote(1))
        assert {t.policy_version for t in batch1} == {start}, "step 1 was not played ahead with the older version"
        assert t1["staleness"] == 1 and t1["stale_regenerated"] == 0 and t1["max_staleness"] == 1
        assert t1["rollout_play_s"] > t1["rollout_s"], t1  # most of its playing overlapped the learner's update
        metrics = learner.update(batch1)
        assert 0 < metrics["tis_weight_mean"] <= 2.0 and 0 <= metrics["tis_truncated_frac"] <= 1
        served = get(pool.serving.remote())[0]
        assert served["version"] == newer and start in served["resident"]  # the older version stayed loaded
        assert get(pool.cursor_state.remote())["position"] == 4  # two steps of two tasks handed to the learner
    finally:
        # A fresh pool numbers its versions from 1, so a later test's pool reuses 1 and 2 on this shared worker.
        served = get(rollout_worker.drop_idle_adapters.remote())
        assert served["version"] == 0 and served["resident"] == [], served
        ray_cluster.kill(pool)
