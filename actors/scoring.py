"""Scoring a step's batch on the reward actor so that a failing, hung or dead actor (or judge) costs episodes, not
the run.

The rule (docs/reliability.md, "Reward actor failure"), with ``reward.score_timeout_s`` = T and
``reward.score_retries`` = R:

1. The whole batch is scored in one call, at most 1 + R times. A call that takes longer than T presumes the actor
   hung: it is killed. A dead actor (killed, crashed, OOM) is replaced by a new one started from the same
   ``RewardConfig`` before the next try. A call that raised is tried again on the same actor.
2. When every try failed, each episode is scored alone, in order, one call each (bounded by T, a dead or hung actor
   replaced as above), which isolates a poison episode. After R + 1 failures in a row the scorer is taken to fail
   on everything and the episodes left are not tried (so a dead judge costs at most 2 (R + 1) T, not one T per
   episode).
3. An episode that could not be scored, or whose reward is not a finite number, is marked: reward 0.0,
   ``reward_breakdown == {"reward_failed": 1.0}``. Its whole group is dropped from the step's batch, so no loss
   token and no group baseline (GRPO/RLOO) sees a reward that was never measured, and the groupmates' advantages
   are not skewed. The other groups train as usual. If no group is left, ``RewardScoringError`` ends the step.

Everything is counted in the pool's fault counters (so in every step's metrics from then on): ``reward_retries``
(tries of the whole batch after the first), ``reward_actor_restarts``, ``episodes_unscored`` (marked) and
``episodes_dropped`` (marked ones and their groupmates).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.config import RewardConfig

__all__ = ["COUNTERS", "RewardScoringError", "ScoredBatch", "mark_unscored", "score_with_retries"]

COUNTERS = ("reward_retries", "reward_actor_restarts", "episodes_unscored", "episodes_dropped")


class RewardScoringError(RuntimeError):
    """No group of the step's batch could be scored: there is nothing sound to train on."""


class ScoredBatch(NamedTuple):
    trajectories: list[Trajectory]  # the batch to train on: scored, whole groups only
    actor: Any  # the reward actor to use from now on (a replacement if the given one died or hung)
    dropped: list[Trajectory]  # marked episodes and their groupmates, left out of ``trajectories``


class _Failed(Exception):
    """One scoring call failed; ``reason`` is its one-line cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def score_with_retries(actor, trajectories: Sequence[Trajectory], tasks: Mapping[str, Task], *,
                       cfg: RewardConfig | None, faults: MutableMapping[str, int],
                       start: Callable[[RewardConfig], Any] | None = None) -> ScoredBatch:
    """Score ``trajectories`` on the reward actor ``actor`` by the module's rule; counts go into ``faults``.

    ``cfg`` is the config the actor was started with (None: defaults, and a dead actor cannot be replaced);
    ``start(cfg)`` starts a replacement (default ``actors.remote.start_reward_actor``).
    """
    for key in COUNTERS:
        faults.setdefault(key, 0)
    caller = _Caller(actor, cfg, faults, start)
    batch, errors = list(trajectories), []
    for attempt in range(1 + caller.cfg.score_retries):
        if attempt:
            faults["reward_retries"] += 1
        try:
            return _finish(batch, caller.score(batch, tasks), [None] * len(batch), caller, faults)
        except _Failed as err:
            errors.append(err.reason)
            print(f"reward scoring of {len(batch)} episodes failed (try {attempt + 1} of "
                  f"{1 + caller.cfg.score_retries}): {err.reason}", flush=True)
    scored, reasons, in_a_row = [], [], 0
    for t in batch:  # the rule's step 2: one episode per call, to isolate the poison
        if in_a_row > caller.cfg.score_retries:
            scored.append(None)
            reasons.append(f"not tried: the {in_a_row} episodes before it failed")
            continue
        try:
            scored += caller.score([t], tasks)
            reasons.append(None)
            in_a_row = 0
        except _Failed as err:
            scored.append(None)
            reasons.append(err.reason)
            in_a_row += 1
    return _finish(batch, scored, reasons, caller, faults, first_error=errors[0] if errors else None)


def mark_unscored(t: Trajectory) -> Trajectory:
    """The episode as the batch records one whose reward could not be measured."""
    return dataclasses.replace(t, reward=0.0, reward_breakdown={"reward_failed": 1.0})


class _Caller:
    """The reward actor behind a timeout, replaced when it dies or hangs."""

    def __init__(self, actor, cfg: RewardConfig | None, faults: MutableMapping[str, int], start):
        self.actor, self.can_restart = actor, cfg is not None
        self.cfg = cfg if cfg is not None else RewardConfig()
        self.faults, self.start = faults, start

    def score(self, batch: list[Trajectory], tasks: Mapping[str, Task]) -> list[Trajectory]:
        import ray

        ref = self.actor.score_batch.remote(batch, tasks)
        try:
            scored = ray.get(ref, timeout=self.cfg.score_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._replace(kill=True)
            raise _Failed(f"no answer within score_timeout_s={self.cfg.score_timeout_s:g} s; actor killed") from None
        except ray.exceptions.RayActorError as err:
            self._replace(kill=False)
            raise _Failed(f"reward actor died ({_first_line(err)})") from None
        except ray.exceptions.RayError as err:  # the scorer raised (RayTaskError), the result was lost, ...
            raise _Failed(_first_line(err)) from None
        if len(scored) != len(batch):
            raise _Failed(f"the reward actor returned {len(scored)} episodes for {len(batch)}")
        return scored

    def _replace(self, *, kill: bool) -> None:
        import ray

        try:
            ray.kill(self.actor, no_restart=True)  # a hung one must stop; a dead one may be restarting
        except Exception:  # noqa: BLE001 - already gone is fine
            pass
        if not self.can_restart:
            return  # every later call fails fast on the dead actor, and the episodes are marked
        if self.start is None:
            from actors.remote import start_reward_actor

            self.start = start_reward_actor
        self.actor = self.start(self.cfg)
        self.faults["reward_actor_restarts"] += 1
        print(f"reward actor {'hung' if kill else 'died'}; replaced "
              f"({self.faults['reward_actor_restarts']} replacements this run)", flush=True)


def _finish(batch: list[Trajectory], scored: list[Trajectory | None], reasons: list[str | None], caller: _Caller,
            faults: MutableMapping[str, int], first_error: str | None = None) -> ScoredBatch:
    """Mark the unscored and non-finite episodes, drop their groups; raise when nothing is left."""
    marked: dict[int, str] = {}
    for i, (t, reason) in enumerate(zip(scored, reasons, strict=True)):
        if t is None:
            marked[i] = reason or "not scored"
        elif not (isinstance(t.reward, (int, float)) and math.isfinite(t.reward)):
            marked[i] = f"non-finite reward {t.reward!r}"
    if not marked:
        return ScoredBatch(list(scored), caller.actor, [])
    bad_groups = {batch[i].group_id for i in marked}
    out = [mark_unscored(batch[i]) if i in marked else t for i, t in enumerate(scored)]
    keep = [t for t in out if t.group_id not in bad_groups]
    dropped = [t for t in out if t.group_id in bad_groups]
    faults["episodes_unscored"] += len(marked)
    faults["episodes_dropped"] += len(dropped)
    named = "; ".join(f"{batch[i].task_id}#{batch[i].sample_index}: {r}" for i, r in list(marked.items())[:5])
    print(f"reward: {len(marked)} of {len(batch)} episodes could not be scored ({named}); their {len(bad_groups)} "
          f"groups ({len(dropped)} episodes) are left out of this step", flush=True)
    if not keep:
        raise RewardScoringError(
            f"no episode of the step's {len(batch)} could be kept: {len(marked)} could not be scored and every group "
            f"holds one (first error: {first_error or next(iter(marked.values()))}). Fix: look at the reward actor's "
            "log for the error; a slow scorer or judge needs a larger reward.score_timeout_s; resume with --resume")
    return ScoredBatch(keep, caller.actor, dropped)


def _first_line(err: BaseException) -> str:
    """``KeyError: 'x'`` for a scorer's exception (a RayTaskError wraps it after a traceback), else the first line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(err).__name__
