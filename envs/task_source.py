"""Where a run's tasks come from: the user's Parquet file, or an env's seeded generator."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from envs import ENVS, TASK_GENERATORS
from envs.config import TaskConfig
from envs.tasks import Task, read_tasks


def load_tasks(cfg: TaskConfig) -> list[Task]:
    """The first ``cfg.num_tasks`` tasks (of ``cfg.kinds``, when given; in the ``cfg.kind_weights`` mix, when given);
    a file is validated whole at load (every bad row named)."""
    if cfg.path:
        tasks = _of_kinds(read_tasks(cfg.path, known_envs=ENVS), cfg)
        return _weighted(tasks, cfg) if cfg.kind_weights else tasks[: cfg.num_tasks]
    if cfg.env not in TASK_GENERATORS:
        raise ValueError(f"env {cfg.env!r} has no task generator. Fix: pass tasks.path=<your tasks.parquet> "
                         f"or use one of {sorted(TASK_GENERATORS)}")
    generate = TASK_GENERATORS[cfg.env]
    if not cfg.kinds and not cfg.kind_weights:
        return generate(cfg.num_tasks, cfg.seed, cfg.split)
    drawn = draw_until(generate, cfg.seed, cfg.split, cfg.num_tasks, 64 * cfg.num_tasks,
                       lambda tasks: _has_enough(_of_kinds(tasks, cfg), cfg))
    tasks = _of_kinds(drawn, cfg)
    if cfg.kind_weights:
        return _weighted(tasks, cfg)
    if len(tasks) < cfg.num_tasks:
        raise ValueError(f"tasks.kinds {list(cfg.kinds)}: only {len(tasks)} of {len(drawn)} generated {cfg.env} tasks "
                         f"are of those kinds, {cfg.num_tasks} asked. Fix: lower tasks.num_tasks or add kinds")
    return tasks[: cfg.num_tasks]


def kind_counts(kinds: list[str], weights: dict[str, float], n: int) -> dict[str, int]:
    """How many of ``n`` tasks each kind gets: ``n`` split in proportion to the weights (1 for a kind not named),
    rounded by largest remainder so the counts sum to ``n``.

    >>> kind_counts(["a", "b", "c"], {"a": 2}, 10)
    {'a': 5, 'b': 3, 'c': 2}
    """
    w = {kind: float(weights.get(kind, 1.0)) for kind in kinds}
    total = sum(w.values())
    exact = {kind: n * w[kind] / total for kind in kinds}
    counts = {kind: int(exact[kind]) for kind in kinds}
    by_remainder = sorted(kinds, key=lambda kind: (-(exact[kind] - counts[kind]), kinds.index(kind)))
    for kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    return counts


def kinds_of(tasks: list[Task]) -> list[str | None]:
    """Each task's ``meta.kind`` (None where it names none)."""
    return [t.meta_value().get("kind") for t in tasks]


def first_of_each_kind(tasks: list[Task], kinds: list[str | None], counts: dict[str, int]) -> list[Task]:
    """The first ``counts[kind]`` tasks of each kind (``kinds``: each task's, from ``kinds_of``), in their order;
    fewer where there are fewer, none of a kind not in ``counts``."""
    taken = dict.fromkeys(counts, 0)
    out = []
    for task, kind in zip(tasks, kinds):
        if kind in taken and taken[kind] < counts[kind]:
            out.append(task)
            taken[kind] += 1
    return out


def _wanted(tasks: list[Task], cfg: TaskConfig) -> tuple[list[str | None], dict[str, int]]:
    """Each task's kind, and the count each kind present should have (``kind_counts``) in the weighted pool."""
    kinds = kinds_of(tasks)
    return kinds, kind_counts(sorted({k for k in kinds if k}), dict(cfg.kind_weights), cfg.num_tasks)


def _has_enough(tasks: list[Task], cfg: TaskConfig) -> bool:
    if not cfg.kind_weights:
        return len(tasks) >= cfg.num_tasks
    kinds, counts = _wanted(tasks, cfg)
    have = Counter(kinds)
    return set(cfg.kind_weights) <= set(counts) and all(have[k] >= c for k, c in counts.items())


def _weighted(tasks: list[Task], cfg: TaskConfig) -> list[Task]:
    """The first tasks of each kind, as many as ``cfg.kind_weights`` gives it, in their original order; a weighted kind
    no task has, or a kind with too few tasks, is an error that names it."""
    kinds, counts = _wanted(tasks, cfg)
    unknown = sorted(set(cfg.kind_weights) - set(counts))
    if unknown:
        raise ValueError(f"tasks.kind_weights: no task of kind {', '.join(unknown)} among {len(tasks)} tasks. Fix: "
                         f"weigh kinds these tasks have: {sorted(counts) or 'none (its tasks name no meta.kind)'}")
    have = Counter(kinds)
    short = {k: f"{have[k]} of {c}" for k, c in counts.items() if have[k] < c}
    if short:
        raise ValueError(f"tasks.kind_weights: too few tasks of some kinds for {cfg.num_tasks} tasks in that mix "
                         f"({short}). Fix: lower tasks.num_tasks or give a larger task file")
    return first_of_each_kind(tasks, kinds, counts)


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
    kinds = kinds_of(tasks)
    unknown = sorted(set(cfg.kinds) - set(kinds))
    if unknown:
        there = sorted({k for k in kinds if k})
        raise ValueError(f"tasks.kinds: no task of kind {', '.join(unknown)} among {len(tasks)} {cfg.env} tasks. Fix: "
                         f"use kinds these tasks have: {there or 'none (its tasks name no meta.kind)'}")
    return [t for t, kind in zip(tasks, kinds) if kind in cfg.kinds]
