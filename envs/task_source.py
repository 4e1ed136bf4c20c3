"""Where a run's tasks come from: the user's Parquet file, or an env's seeded generator."""

from __future__ import annotations

from envs import ENVS, TASK_GENERATORS
from envs.config import TaskConfig
from envs.tasks import Task, read_tasks


def load_tasks(cfg: TaskConfig) -> list[Task]:
    """The first ``cfg.num_tasks`` tasks; a file is validated whole at load (every bad row named)."""
    if cfg.path:
        return read_tasks(cfg.path, known_envs=ENVS)[: cfg.num_tasks]
    if cfg.env not in TASK_GENERATORS:
        raise ValueError(f"env {cfg.env!r} has no task generator. Fix: pass tasks.path=<your tasks.parquet> "
                         f"or use one of {sorted(TASK_GENERATORS)}")
    return TASK_GENERATORS[cfg.env](cfg.num_tasks, cfg.seed, cfg.split)
