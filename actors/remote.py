"""The one place actor classes become Ray actors (STYLE.md: Ray stays at the edges)."""

from __future__ import annotations

from actors.config import RolloutConfig
from actors.rollout_worker import RolloutWorker


def rollout_worker_resources(cfg: RolloutConfig) -> dict[str, float]:
    return {"CPU": cfg.num_cpus_per_worker * cfg.num_workers, "GPU": cfg.num_gpus_per_worker * cfg.num_workers}


def start_rollout_workers(model_path: str, cfg: RolloutConfig) -> list:
    """Start ``cfg.num_workers`` rollout workers and wait until each engine is up (raises the first failure)."""
    import ray

    actor = ray.remote(RolloutWorker).options(
        num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker, max_concurrency=1,
    )
    workers = [actor.remote(model_path, cfg, worker_index=i) for i in range(cfg.num_workers)]
    ray.get([w.ping.remote() for w in workers])
    return workers
