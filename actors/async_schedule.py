"""The staleness bound of async training, as a pure scheduler: when the producer may start a batch, which batch the
learner gets, and which must be played again because it is too old.

Versions count adapter syncs (``RolloutPool.version``). A batch played with version ``v`` and handed to the learner
when the pool serves version ``V`` has staleness ``V - v``. The learner syncs after every update, so a producer that
keeps at most ``max_staleness`` batches started but not yet consumed gives staleness <= ``max_staleness`` by
construction (a batch started now is consumed after at most that many more syncs). Versions can also jump without a
batch (a resumed learner pushes its checkpoint's adapter): ``take`` checks the bound itself and answers "stale", and
the pool plays that batch's tasks again with the current version (counted). Nothing here sleeps or reads a clock
except through ``clock``, so a test can drive it with simulated time over random timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Ticket:
    """One batch: which step it is for, the tasks' cursor range, the version it is played with."""

    step: int
    version: int
    start_pos: int
    end_pos: int
    started_at: float
    epoch: int
    finished_at: float | None = None
    batch: object = None


@dataclass
class AsyncSchedule:
    max_staleness: int
    clock: Callable[[], float] = time.monotonic
    next_step: int = 0  # the step of the next batch to start
    epoch: int = 0  # bumped on reset: tickets of an older epoch are thrown away when they finish
    pending: dict[int, Ticket] = field(default_factory=dict)  # started, not consumed: step -> ticket
    counts: dict[str, float] = field(default_factory=lambda: {"stale_regenerated": 0, "batches_played": 0})

    def __post_init__(self) -> None:
        if self.max_staleness < 1:
            raise ValueError(f"max_staleness must be >= 1 in async mode, got {self.max_staleness}")

    # -- producer side ----------------------------------------------------------------------------------------
    def may_start(self, last_step: int | None = None) -> bool:
        """Room for one more batch: fewer than ``max_staleness`` started and not consumed (and steps left)."""
        if last_step is not None and self.next_step > last_step:
            return False
        return len(self.pending) < self.max_staleness

    def start(self, version: int, start_pos: int, end_pos: int) -> Ticket:
        if not self.may_start():
            raise RuntimeError(f"{len(self.pending)} batches already pending (max_staleness {self.max_staleness})")
        ticket = Ticket(self.next_step, version, start_pos, end_pos, self.clock(), self.epoch)
        self.pending[ticket.step] = ticket
        self.next_step += 1
        return ticket

    def finish(self, ticket: Ticket, batch) -> bool:
        """Record a played batch; False (and nothing kept) when the ticket is from before a reset."""
        if ticket.epoch != self.epoch or self.pending.get(ticket.step) is not ticket:
            return False
        ticket.batch, ticket.finished_at = batch, self.clock()
        self.counts["batches_played"] += 1
        return True

    # -- learner side -----------------------------------------------------------------------------------------
    def ready(self, step: int) -> bool:
        ticket = self.pending.get(step)
        return ticket is not None and ticket.finished_at is not None

    def staleness(self, step: int, current_version: int) -> int:
        return current_version - self.pending[step].version

    def take(self, step: int, current_version: int) -> Ticket | None:
        """The finished batch of ``step`` if it is within the bound (removed from pending), else None: the caller
        plays its tasks again (``replay``). Raises if ``step`` is not ready."""
        if not self.ready(step):
            raise KeyError(f"batch of step {step} is not ready")
        if self.staleness(step, current_version) > self.max_staleness:
            self.counts["stale_regenerated"] += 1
            return None
        return self.pending.pop(step)

    def replay(self, step: int, version: int, batch) -> Ticket:
        """The batch of ``step`` played again with ``version`` (its tasks unchanged): consumed at once."""
        old = self.pending.pop(step)
        now = self.clock()
        return Ticket(step, version, old.start_pos, old.end_pos, now, self.epoch, now, batch)

    def reset(self, next_step: int) -> None:
        """Forget every pending batch (a resume): production restarts at ``next_step``."""
        self.pending.clear()
        self.next_step = next_step
        self.epoch += 1
