"""The reward actor: a thin wrapper that scores trajectory batches with ``rewards.combine``.

A plain class, so it is unit-tested without Ray; the training job makes it a Ray actor in one place
(``actors/remote.py``). With ``reward.process_weights`` set it also writes the process rewards
(``rewards.process``): the weighted per-turn sum goes into each ``Turn.reward`` (overwriting it, so re-scoring is
idempotent) and ``process_mean`` (and the scorers' own means) into the breakdown, so the training job logs
``reward/process_mean``. Without process weights, ``Turn.reward`` is left as given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from actors.trajectory import Trajectory
from envs.tasks import Task
from jobs.config_loader import ConfigError
from rewards.config import RewardConfig
from rewards.monitor import hacking_flag, reward_stats
from rewards.process import process_rewards
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
        """Copies of ``trajectories`` with ``reward`` and ``reward_breakdown`` set (and ``turns`` with their process
        rewards when ``process_weights`` are set); the input is not changed.

        The copies are shallow (``dataclasses.replace``): they share token lists and messages with the input (turns
        too, unless process rewards replace them with new ``Turn`` copies), which is cheap for large batches and
        safe because nothing here mutates them. A ``task_id`` missing from ``tasks`` is a caller bug, not an odd
        trajectory: KeyError naming it.
        """
        scored = []
        for t in trajectories:
            task = tasks.get(t.task_id)
            if task is None:
                raise KeyError(f"no task for trajectory task_id {t.task_id!r} ({len(tasks)} tasks given); pass "
                               "the tasks the batch was played on")
            total, breakdown = combine(t, task, self.cfg)
            turns = t.turns
            if self.cfg.process_weights:
                per_turn, parts = process_rewards(t, task, self.cfg.process_weights, self.cfg.process_params)
                turns = [dataclasses.replace(turn, reward=r) for turn, r in zip(t.turns, per_turn, strict=True)]
                breakdown = breakdown | parts
            scored.append(dataclasses.replace(t, reward=total, reward_breakdown=breakdown, turns=turns))
        return scored

    def stats(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Per-component mean/std/min/max of a scored batch (``rewards.monitor.reward_stats``)."""
        return reward_stats(trajectories)

    @staticmethod
    def hacking_flag(history: Sequence[dict], **kwargs) -> bool:
        """A shaping component rising while the outcome falls over recent steps (``rewards.monitor.hacking_flag``)."""
        return hacking_flag(history, **kwargs)
