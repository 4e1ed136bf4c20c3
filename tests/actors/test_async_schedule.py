"""The staleness bound of async mode, as a property of the real scheduler (actors/async_schedule.py) driven by a
discrete-event simulation with an injected clock: random play and learn times, random version jumps (a resumed
learner pushing its checkpoint), random bounds. The learner never trains on a batch more than ``max_staleness``
versions old, consumes every step once and in order, and the task cursor ranges it consumes are contiguous."""

from __future__ import annotations

import heapq
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.async_schedule import AsyncSchedule

pytestmark = pytest.mark.timeout(120)

SEEN: Counter = Counter()  # across examples: the property must not hold only because nothing was ever stale


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(max_staleness: int, steps: int, play: list[float], learn: list[float], jumps: list[bool],
             batch_size: int = 4) -> list[dict]:
    """One rollout worker (plays one batch at a time, a replay included) and one learner; returns what was consumed."""
    clock = Clock()
    sched = AsyncSchedule(max_staleness, clock=clock)
    sched.reset(0)
    version, cursor, step = 0, 0, 0
    events: list = []  # (time, seq, kind, payload)
    seq = iter(range(10**9))
    worker_busy = learner_busy = False
    replaying: int | None = None
    consumed: list[dict] = []
    i_play = i_learn = 0

    def push(delay, kind, payload=None):
        heapq.heappush(events, (clock.now + delay, next(seq), kind, payload))

    def poke():
        nonlocal worker_busy, learner_busy, cursor, replaying, i_play
        if not learner_busy and replaying is None and step < steps and sched.ready(step):
            ticket = sched.take(step, version)
            if ticket is None:  # stale: the learner waits while the worker plays the step's tasks again
                replaying = step
            else:
                consumed.append({"step": step, "staleness": version - ticket.version, "range": (ticket.start_pos,
                                                                                                  ticket.end_pos)})
                learner_busy = True
                push(learn[len(consumed) % len(learn)], "learned")
        if not worker_busy:
            if replaying is not None:
                worker_busy = True
                push(play[i_play % len(play)], "replayed", version)
                i_play += 1
            elif sched.may_start(steps - 1):
                ticket = sched.start(version, cursor, cursor + batch_size)
                cursor += batch_size
                worker_busy = True
                push(play[i_play % len(play)], "played", ticket)
                i_play += 1

    poke()
    while events:
        clock.now, _, kind, payload = heapq.heappop(events)
        if kind == "played":
            worker_busy = False
            sched.finish(payload, batch=("batch", payload.step))
        elif kind == "replayed":
            worker_busy = False
            ticket = sched.replay(replaying, payload, batch=("batch", replaying))
            consumed.append({"step": replaying, "staleness": version - ticket.version,
                             "range": (ticket.start_pos, ticket.end_pos)})
            replaying = None
            learner_busy = True
            push(learn[len(consumed) % len(learn)], "learned")
        elif kind == "learned":
            learner_busy = False
            version += 1  # the sync after every update
            if jumps[i_learn % len(jumps)]:
                version += 1  # e.g. a restored learner pushes its checkpoint's adapter: a version with no batch
            i_learn += 1
            step += 1
        poke()
    return consumed, sched.counts


durations = st.lists(st.floats(0.01, 10.0), min_size=1, max_size=20)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(max_staleness=st.integers(1, 3), steps=st.integers(1, 25), play=durations, learn=durations,
       jumps=st.lists(st.sampled_from([False, False, False, True]), min_size=1, max_size=10))
def test_the_learner_never_trains_beyond_the_staleness_bound(max_staleness, steps, play, learn, jumps):
    consumed, counts = simulate(max_staleness, steps, play, learn, jumps)
    assert [c["step"] for c in consumed] == list(range(steps))  # every step once, in order
    assert all(0 <= c["staleness"] <= max_staleness for c in consumed), consumed
    ranges = [c["range"] for c in consumed]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # no task skipped or repeated
    assert counts["batches_played"] >= steps - counts["stale_regenerated"]
    if not any(jumps):  # without version jumps the producer's lookahead alone keeps every batch fresh enough
        assert counts["stale_regenerated"] == 0, consumed
    SEEN["at the bound"] += any(c["staleness"] == max_staleness for c in consumed)
    SEEN["regenerated"] += counts["stale_regenerated"] > 0


def test_the_simulation_reaches_the_bound_and_the_regenerate_path():
    """Runs after the property (file order): the random timings did hit both edges."""
    assert SEEN["at the bound"] > 20 and SEEN["regenerated"] > 5, SEEN


def test_a_stale_batch_is_refused_and_replayed_with_the_current_version():
    clock = Clock()
    sched = AsyncSchedule(1, clock=clock)
    first = sched.start(version=3, start_pos=0, end_pos=8)
    assert not sched.may_start()  # one pending batch is all max_staleness=1 allows
    clock.now = 5.0
    assert sched.finish(first, batch="b0")
    assert sched.take(0, current_version=5) is None and sched.counts["stale_regenerated"] == 1
    replayed = sched.replay(0, version=5, batch="b0 again")
    assert (replayed.version, replayed.start_pos, replayed.end_pos, replayed.batch) == (5, 0, 8, "b0 again")
    assert sched.may_start()
    second = sched.start(version=5, start_pos=8, end_pos=16)
    sched.reset(next_step=7)  # a resume: what was in flight is thrown away when it lands
    assert not sched.finish(second, batch="late") and sched.next_step == 7 and sched.may_start()


def test_max_staleness_zero_is_not_async():
    with pytest.raises(ValueError, match="max_staleness must be >= 1"):
        AsyncSchedule(0)
