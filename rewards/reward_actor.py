"""The reward actor: a thin wrapper that scores trajectory batches with ``rewards.combine``.

A plain class, so it is unit-tested without Ray; the training job makes it a Ray actor in one place
(``actors/remote.py``). Episode rewards only: per-turn ``Turn.reward`` (process rewards) is left as given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from actors.trajectory import Trajectory
from envs.tasks import Task
from jobs.config_loader import ConfigError
from rewards.config import RewardConfig
from rewards.monitor import hacking_flag, reward_stats
from rewards.scorers import combine

__all__ = ["RewardActor"]


class RewardActor:
    """Scores batches with one validated ``RewardConfig``."""

    def __init__(self, cfg: RewardConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else RewardConfig()
        problems = self.cfg.validate()
        if problems:
            raise ConfigError(problems)

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Mapping[str, Task]) -> list[Trajectory]:
        """Copies of ``trajectories`` with ``reward`` and ``reward_breakdown`` set; the input is not changed.

        The copies are shallow (``dataclasses.replace``): they share token lists, turns and messages with the
        input, which is cheap for large batches and safe because nothing here mutates them. A ``task_id`` missing
        from ``tasks`` is a caller bug, not an odd trajectory: KeyError naming it.
        """
        scored = []
        for t in trajectories:
            task = tasks.get(t.task_id)
            if task is None:
                raise KeyError(f"no task for trajectory task_id {t.task_id!r} ({len(tasks)} tasks given); pass "
                               "the tasks the batch was played on")
            total, breakdown = combine(t, task, self.cfg)
            scored.append(dataclasses.replace(t, reward=total, reward_breakdown=breakdown))
        return scored

    def stats(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Per-component mean/std/min/max of a scored batch (``rewards.monitor.reward_stats``)."""
        return reward_stats(trajectories)

    @staticmethod
    def hacking_flag(history: Sequence[dict], **kwargs) -> bool:
        """Format or tool use rising while the outcome falls over recent steps (``rewards.monitor.hacking_flag``)."""
        return hacking_flag(history, **kwargs)
