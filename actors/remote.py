"""The one place actor classes become Ray actors (STYLE.md: Ray stays at the edges)."""

from __future__ import annotations

from actors.config import RolloutConfig
from actors.rollout_worker import RolloutWorker
from cluster.plan import Placement

NO_PLACEMENT = Placement()

REWARD_CPUS = 0.1  # scoring is cheap Python; a whole CPU would not fit next to the engine on 2 cores
POOL_CPUS = 0.1  # the pool only waits on workers


def _worker_actor(cfg: RolloutConfig, index: int, placement: Placement | None):
    import ray

    return ray.remote(RolloutWorker).options(
        num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker, max_concurrency=1,
        **(placement or NO_PLACEMENT).options("rollout", index),
    )


def start_rollout_workers(model_path: str, cfg: RolloutConfig, placement: Placement | None = None) -> list:
    """Start ``cfg.num_workers`` rollout workers (in the run's placement group, when given) and wait until each
    engine is up (raises the first failure)."""
    import ray

    workers = [_worker_actor(cfg, i, placement).remote(model_path, cfg, worker_index=i)
               for i in range(cfg.num_workers)]
    ray.get([w.ping.remote() for w in workers])
    return workers


def start_rollout_worker(model_path: str, cfg: RolloutConfig, index: int, placement: Placement | None = None,
                         timeout_s: float | None = None):
    """One rollout worker (a replacement for worker ``index``: the dead one's bundle), up when this returns.
    ``timeout_s``: how long it may wait for room (``cluster.plan.wait_for_room``; PlanDoesNotFitError past it, and
    nothing started); None = as long as Ray takes."""
    import ray

    from cluster.plan import wait_for_room

    if timeout_s is not None:
        wait_for_room(f"rollout worker {index}", {"CPU": cfg.num_cpus_per_worker, "GPU": cfg.num_gpus_per_worker},
                      (placement or NO_PLACEMENT).options("rollout", index), timeout_s)
    worker = _worker_actor(cfg, index, placement).remote(model_path, cfg, worker_index=index)
    ray.get(worker.ping.remote())
    return worker


def start_reward_actor(cfg, judge=None, placement: Placement | None = None):
    """The reward actor: light, so a fraction of a CPU. ``judge``: the Ray actor that answers its LLM judge
    (``judge_for``); None = no judge."""
    import ray

    from rewards.reward_actor import RewardActor

    return ray.remote(RewardActor).options(num_cpus=REWARD_CPUS, **(placement or NO_PLACEMENT).options("reward")
                                           ).remote(cfg, judge=judge)


def judge_for(reward_cfg, rollout_cfg: RolloutConfig, workers: list):
    """The judge under ``reward.judge``: None (none), the first rollout worker (rollout: its engine's base model,
    requests without LoRA), or a judge actor started now on ``reward.judge_model`` (actor)."""
    if reward_cfg.judge == "rollout":
        return workers[0]
    if reward_cfg.judge == "actor":
        return start_judge_actor(reward_cfg.judge_model, rollout_cfg)
    return None


def start_judge_actor(model: str, cfg: RolloutConfig):
    """A judge on its own vLLM engine with ``model`` (resolved like model.name), sized like a rollout worker;
    up when this returns."""
    import ray

    from actors.judge_actor import JudgeActor
    from cluster.model import resolve_model

    actor = ray.remote(JudgeActor).options(num_cpus=cfg.num_cpus_per_worker, num_gpus=cfg.num_gpus_per_worker,
                                           max_concurrency=1).remote(str(resolve_model(model)), cfg)
    ray.get(actor.ping.remote())
    return actor


def start_rollout_pool(workers: list, reward_actor, tasks: list, *, tasks_per_step: int, seed: int,
                       strata: tuple | None = None, engine_dtype: str, out_dir: str,
                       respawn: tuple[str, RolloutConfig] | None = None, reward_cfg=None, judge=None,
                       max_staleness: int = 0, last_step: int | None = None, placement: Placement | None = None,
                       placement_timeout_s: float = 300.0):
    """The pool runs requests from several learner ranks at once (they block on the same step's batch). It starts
    replacement workers and reward actors into ``placement``'s bundles; a worker not placed within
    ``placement_timeout_s`` is left out (the pool goes on with fewer)."""
    import ray

    from actors.rollout_pool import RolloutPool

    return ray.remote(RolloutPool).options(num_cpus=POOL_CPUS, max_concurrency=8,
                                           **(placement or NO_PLACEMENT).options("pool")).remote(
        workers, reward_actor, tasks, tasks_per_step=tasks_per_step, seed=seed, strata=strata,
        engine_dtype=engine_dtype, out_dir=out_dir, respawn=respawn, reward_cfg=reward_cfg, judge=judge,
        max_staleness=max_staleness, last_step=last_step, placement=placement, placement_timeout_s=placement_timeout_s)
