"""Where a run's tasks come from: the user's Parquet file, or an env's seeded generator."""

from __future__ import annotations

from collections.abc import Callable

from envs import ENVS, TASK_GENERATORS
from envs.config import TaskConfig
from envs.tasks import Task, read_tasks


def load_tasks(cfg: TaskConfig) -> list[Task]:
    """The first ``cfg.num_tasks`` tasks (of ``cfg.kinds``, when given); a file is validated whole at load (every
    bad row named)."""
    if cfg.path:
        return _of_kinds(read_tasks(cfg.path, known_envs=ENVS), cfg)[: cfg.num_tasks]
    if cfg.env not in TASK_GENERATORS:
        raise ValueError(f"env {cfg.env!r} has no task generator. Fix: pass tasks.path=<your tasks.parquet> "
                         f"or use one of {sorted(TASK_GENERATORS)}")
    generate = TASK_GENERATORS[cfg.env]
    if not cfg.kinds:
        return generate(cfg.num_tasks, cfg.seed, cfg.split)
    drawn = draw_until(generate, cfg.seed, cfg.split, cfg.num_tasks, 64 * cfg.num_tasks,
                       lambda tasks: len(_of_kinds(tasks, cfg)) >= cfg.num_tasks)
    tasks = _of_kinds(drawn, cfg)
    if len(tasks) < cfg.num_tasks:
        raise ValueError(f"tasks.kinds {list(cfg.kinds)}: only {len(tasks)} of {len(drawn)} generated {cfg.env} tasks "
                         f"are of those kinds, {cfg.num_tasks} asked. Fix: lower tasks.num_tasks or add kinds")
    return tasks[: cfg.num_tasks]


def draw_until(generate: Callable[..., list[Task]], seed: int, split: str, start: int, cap: int,
               enough: Callable[[list[Task]], bool]) -> list[Task]:
    """The generator's first ``start`` tasks, doubled until ``enough(tasks)`` or ``cap`` tasks are drawn.

    Generators draw kinds at random, so a caller wanting tasks of some kinds draws more until it has them; a shorter
    draw is a prefix of a longer one, so the tasks already counted stay the same."""
    drawn = start
    while True:
        tasks = generate(drawn, seed, split)
        if enough(tasks) or drawn >= cap:
            return tasks
        drawn *= 2


def _of_kinds(tasks: list[Task], cfg: TaskConfig) -> list[Task]:
    """The tasks whose ``meta.kind`` is in ``cfg.kinds`` (all when it is empty); a kind no task has is an error that
    names the kinds there are."""
    if not cfg.kinds:
        return tasks
    kinds = [t.meta_value().get("kind") for t in tasks]
    unknown = sorted(set(cfg.kinds) - set(kinds))
    if unknown:
        there = sorted({k for k in kinds if k})
        raise ValueError(f"tasks.kinds: no task of kind {', '.join(unknown)} among {len(tasks)} {cfg.env} tasks. Fix: "
                         f"use kinds these tasks have: {there or 'none (its tasks name no meta.kind)'}")
    return [t for t, kind in zip(tasks, kinds) if kind in cfg.kinds]
