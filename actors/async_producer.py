"""Async mode's producer: a thread in the rollout pool that plays batches ahead of the learner, within the staleness
bound of ``actors.async_schedule``.

While the learner trains on step k's batch, the producer plays step k+1's (up to ``max_staleness`` batches ahead)
with the newest adapter version the pool serves; every trajectory carries that version (``policy_version``). When
the learner asks for a step, it gets the finished batch if its staleness is within the bound, else the batch's tasks
are played again with the current version (counted as ``stale_regenerated``). The rollout workers run one call at a
time, so a sync queues behind the batch being played: the overlap is generation of batch k+1 against the learner's
update of batch k.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from actors.async_schedule import AsyncSchedule, Ticket


class AsyncProducer:
    def __init__(self, pool, max_staleness: int, last_step: int | None):
        self.pool = pool
        self.schedule = AsyncSchedule(max_staleness)
        self.last_step = last_step
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.restart_pending = True  # the first take() sets where production starts

    def take(self, step: int) -> tuple[list, dict]:
        """The scored batch of ``step`` within the bound, and its timings (the learner's wait is ``rollout_s``)."""
        waited_from = time.perf_counter()
        with self.cond:
            if self.restart_pending or (step not in self.schedule.pending and step != self.schedule.next_step):
                self.schedule.reset(step)  # first call, a resume, or a step asked out of order
                self.restart_pending = False
                self.cond.notify_all()
            self._ensure_thread()
            while not self.schedule.ready(step):
                if self.error is not None:
                    raise RuntimeError(f"async producer failed: {self.error!r}") from self.error
                self.cond.wait(timeout=1.0)
            version = self.pool.version
            staleness = self.schedule.staleness(step, version)
            ticket = self.schedule.take(step, version)
            stale = ticket is None
            if stale:
                old = self.schedule.pending[step]
                tasks = self._tasks(old.start_pos, old.end_pos)
        if stale:  # played again outside the lock: the producer may go on meanwhile
            batch = self.pool._play_and_score(tasks, version=version)
            with self.cond:
                ticket = self.schedule.replay(step, version, batch)
                self.cond.notify_all()
            staleness = 0
        else:
            with self.cond:
                self.cond.notify_all()  # a slot is free: the producer may start the next batch
        self.pool.consumed_position = ticket.end_pos
        scored, timings = ticket.batch
        return scored, timings | {
            "rollout_s": time.perf_counter() - waited_from,  # what the learner waited for this batch (incl. scoring)
            "reward_s": 0.0,  # scoring ran in the producer, inside that wait or overlapped with learning
            "rollout_play_s": timings["rollout_s"],  # what playing it took (overlapped with learning)
            "reward_play_s": timings["reward_s"],
            "staleness": float(staleness), "max_staleness": float(self.schedule.max_staleness),
            "stale_regenerated": self.schedule.counts["stale_regenerated"],
        }

    def restart(self, load: Callable[[], None]) -> None:
        """Run ``load`` (it moves the task cursor) with production paused; batches played ahead are dropped."""
        with self.cond:
            load()
            self.restart_pending = True
            self.schedule.reset(self.schedule.next_step)  # take() sets the step production restarts at

    # -- the producer thread ------------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="async-producer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.restart_pending or not self.schedule.may_start(self.last_step):
                    self.cond.wait()
                start = self.pool.cursor.position
                tasks = [self.pool.tasks[i] for i in self.pool.cursor.take(self.pool.tasks_per_step)]
                ticket: Ticket = self.schedule.start(self.pool.version, start, self.pool.cursor.position)
            try:
                batch = self.pool._play_and_score(tasks, version=ticket.version)
            except BaseException as err:  # surfaces in take(): the run must not wait forever
                with self.cond:
                    self.error = err
                    self.cond.notify_all()
                return
            with self.cond:
                self.schedule.finish(ticket, batch)
                self.cond.notify_all()

    def _tasks(self, start: int, end: int) -> list:
        from dataclasses import replace

        cursor = replace(self.pool.cursor, position=start)  # the pool's cursor (seed, strata) moved to ``start``
        return [self.pool.tasks[i] for i in cursor.take(end - start)]
