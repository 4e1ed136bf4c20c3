"""The reward actor: a thin wrapper that scores trajectory batches with ``rewards.combine``.

A plain class, so it is unit-tested without Ray; the training job makes it a Ray actor in one place
(``actors/remote.py``). With ``reward.process_weights`` set it also writes the process rewards
(``rewards.process``): the weighted per-turn sum goes into each ``Turn.reward`` (overwriting it, so re-scoring is
idempotent) and ``process_mean`` (and the scorers' own means) into the breakdown, so the training job logs
``reward/process_mean``. Without process weights, ``Turn.reward`` is left as given.

With ``reward.weights.judge`` or ``reward.process_weights.judge`` not 0, the actor asks its judge (``set_judge``:
a rollout worker or a judge actor) about the whole batch in one call with a timeout (``rewards.judge.judge_batch``);
what the judge did not score falls back to 0.0, marked ``judge_fallback`` in the breakdown and counted in ``stats``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from actors.trajectory import Trajectory
from envs.tasks import Task
from jobs.config_loader import ConfigError
from rewards.config import RewardConfig
from rewards.judge import COUNTERS as JUDGE_COUNTERS
from rewards.judge import judge_batch
from rewards.monitor import hacking_flag, reward_stats
from rewards.process import process_rewards
from rewards.scorers import combine

__all__ = ["RewardActor"]


class RewardActor:
    """Scores batches with one validated ``RewardConfig``."""

    def __init__(self, cfg: RewardConfig | None = None, *, judge=None) -> None:
        self.cfg = cfg if cfg is not None else RewardConfig()
        problems = self.cfg.validate()
        if problems:
            raise ConfigError(problems)
        self.judge = judge
        self.judge_counts = dict.fromkeys(JUDGE_COUNTERS, 0)  # prompts since the actor started, by outcome
        # A judge weighted 0 is not asked (it costs engine time), so it is left out of the breakdown too.
        episode_weight, turn_weight = self.cfg.judge_weights()
        self._scoring_cfg = dataclasses.replace(
            self.cfg, weights={k: w for k, w in self.cfg.weights.items() if k != "judge" or episode_weight},
            process_weights={k: w for k, w in self.cfg.process_weights.items() if k != "judge" or turn_weight})

    def set_judge(self, handle) -> None:
        """The Ray actor that answers the judge's prompts, ``judge(prompts, max_tokens, temperature) -> list[str]``:
        a rollout worker (``reward.judge=rollout``) or a judge actor (``actors/judge_actor.py``)."""
        self.judge = handle

    def score_batch(self, trajectories: Sequence[Trajectory], tasks: Mapping[str, Task]) -> list[Trajectory]:
        """Copies of ``trajectories`` with ``reward`` and ``reward_breakdown`` set (and ``turns`` with their process
        rewards when ``process_weights`` are set); the input is not changed.

        The copies are shallow (``dataclasses.replace``): they share token lists and messages with the input (turns
        too, unless process rewards replace them with new ``Turn`` copies), which is cheap for large batches and
        safe because nothing here mutates them. A ``task_id`` missing from ``tasks`` is a caller bug, not an odd
        trajectory: KeyError naming it.
        """
        missing = sorted({t.task_id for t in trajectories if t.task_id not in tasks})
        if missing:
            raise KeyError(f"no task for trajectory task_id {missing[0]!r} ({len(tasks)} tasks given); pass "
                           "the tasks the batch was played on")
        cfg = self._scoring_cfg
        verdicts = judge_batch(self.judge, trajectories, cfg) if any(cfg.judge_weights()) else None
        if verdicts is not None:
            self._count_judge(verdicts.counts)
        scored = []
        for i, t in enumerate(trajectories):
            task = tasks[t.task_id]
            total, breakdown = combine(t, task, cfg, verdicts.given[i] if verdicts else None)
            turns = t.turns
            if cfg.process_weights:
                per_turn, parts = process_rewards(t, task, cfg.process_weights, cfg.process_params,
                                                  verdicts.given_turns[i] if verdicts else None)
                turns = [dataclasses.replace(turn, reward=r) for turn, r in zip(t.turns, per_turn, strict=True)]
                breakdown = breakdown | parts
            if verdicts is not None:
                breakdown = breakdown | verdicts.notes[i]
            scored.append(dataclasses.replace(t, reward=total, reward_breakdown=breakdown, turns=turns))
        return scored

    def _count_judge(self, counts: Mapping[str, int]) -> None:
        for key, n in counts.items():
            self.judge_counts[key] += n
        lost = {k.removeprefix("judge_"): n for k, n in counts.items() if n and k not in ("judge_prompts",
                                                                                         "judge_fallbacks")}
        if lost:  # the reward actor's log says why; the breakdown and stats count it
            print(f"judge: {counts['judge_fallbacks']} of {counts['judge_prompts']} prompts fell back to 0.0 "
                  f"({', '.join(f'{k} {n}' for k, n in lost.items())})", flush=True)

    def stats(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Per-component mean/std/min/max of a scored batch (``rewards.monitor.reward_stats``); with a judge
        weighted, also the judge's prompt counters since the actor started (``rewards.judge.COUNTERS``:
        ``judge_prompts``, ``judge_fallbacks`` and its reasons ``judge_timeout|error|unparseable|unset``)."""
        stats = reward_stats(trajectories)
        return stats | self.judge_counts if any(self.cfg.judge_weights()) else stats

    @staticmethod
    def hacking_flag(history: Sequence[dict], **kwargs) -> bool:
        """A shaping component rising while the outcome falls over recent steps (``rewards.monitor.hacking_flag``)."""
        return hacking_flag(history, **kwargs)
