"""Test helper: a rollout pool that replaces dead workers (``respawn``), serving a fresh learner's adapter."""

from __future__ import annotations


def respawning_pool(model_path: str, cfg, tasks: list, *, tasks_per_step: int, out_dir: str,
                    **pool_args) -> tuple[list, object]:
    """``cfg.num_workers`` real rollout workers and a pool over them that may start more (replacements, resize);
    ``pool_args`` go to ``start_rollout_pool`` (async mode, the placement timeout)."""
    from actors.remote import start_reward_actor, start_rollout_pool, start_rollout_workers
    from rewards.config import RewardConfig

    workers = start_rollout_workers(model_path, cfg)
    pool = start_rollout_pool(workers, start_reward_actor(RewardConfig()), tasks, tasks_per_step=tasks_per_step,
                              seed=0, engine_dtype=cfg.dtype, out_dir=out_dir, respawn=(model_path, cfg), **pool_args)
    return workers, pool


def serve_fresh_adapter(pool, model_path: str, temperature: float) -> tuple[dict[str, bytes], int]:
    """Push a fresh learner's adapter through the verified sync; returns its files and the version it got."""
    from learners.config import LearnerConfig
    from learners.learner import Learner
    from learners.sync import push_adapter

    learner = Learner(LearnerConfig(), model_path, temperature=temperature)
    return learner.adapter_files(), push_adapter(learner, pool)["version"]
