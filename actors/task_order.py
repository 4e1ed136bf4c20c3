"""The order a run plays its tasks in: epochs over the pool, a new seeded order each, optionally stratified by kind.

With a handful of tasks a step, a plain shuffle makes each step's mix of task kinds swing. On support_desk
(docs/envs/support_desk.md, stop 26) one step drew three tools_fail tasks and another three by_name, and
a 135M policy carries what one kind rewards into the others: its first call. A stratified order spaces each kind
evenly through the epoch, so every window of ``tasks_per_step`` consecutive tasks holds each kind in about its share
of the pool (within about one task), and the epoch is still a permutation of the pool.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["TaskCursor", "stratified_order", "strata_for", "resume_mismatch"]


def stratified_order(strata: Sequence[str | None], rng: random.Random) -> list[int]:
    """A random permutation of ``range(len(strata))`` with each stratum spread evenly (systematic sampling).

    Each stratum's indices are shuffled; the j-th of a stratum of n gets the key ``(j + u) / n`` with one random
    ``u`` in [0, 1) per stratum; indices are sorted by key (ties at random). A window of w consecutive positions then
    holds about w * n / N +- 1 of a stratum of n among N (each stratum is within 1 of its share on
    the key scale; positions add the other strata's rounding: 1.2 at most in tests/actors/test_task_order.py).

    >>> order = stratified_order(["a"] * 6 + ["b"] * 3, random.Random(0))
    >>> sorted(order) == list(range(9))
    True
    >>> [["a", "b"][i >= 6] for i in order].count("b") == 3
    True
    """
    groups: dict[str | None, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    keyed = []
    for members in (groups[s] for s in sorted(groups, key=lambda s: (s is None, s or ""))):
        rng.shuffle(members)
        u = rng.random()
        keyed.extend(((j + u) / len(members), rng.random(), i) for j, i in enumerate(members))
    return [i for _, _, i in sorted(keyed)]


def strata_for(kinds: Sequence[str | None], stratify: bool) -> tuple[str | None, ...] | None:
    """The strata a run's cursor stratifies on: each task's ``meta.kind`` when ``stratify`` is on, else None.

    A pool whose tasks name no kind has nothing to stratify on; that is an error naming the fix."""
    if not stratify:
        return None
    if not any(kinds):
        raise ValueError(f"train.stratify_kinds: none of the {len(kinds)} tasks names a meta.kind, so there is "
                         "nothing to spread. Fix: set train.stratify_kinds=false, or give the tasks meta.kind")
    return tuple(kinds)


@dataclass
class TaskCursor:
    """Walks the task list in epochs; a new seeded order each epoch, so resume replays exactly. With ``strata``
    (a kind per task, ``strata_for``) each epoch's order is ``stratified_order``."""

    num_tasks: int
    seed: int
    position: int = 0
    strata: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.strata is not None and len(self.strata) != self.num_tasks:
            raise ValueError(f"TaskCursor: {len(self.strata)} strata for {self.num_tasks} tasks; give one per task")
        self._epoch: tuple[int, int, list[int]] | None = None  # (seed, epoch, order): the order in use, kept

    @property
    def order(self) -> str:
        """What kind of order this cursor walks: ``"stratified"`` or ``"shuffled"`` (saved with its position)."""
        return "shuffled" if self.strata is None else "stratified"

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            epoch, offset = divmod(self.position, self.num_tasks)
            out.append(self._order(epoch)[offset])
            self.position += 1
        return out

    def _order(self, epoch: int) -> list[int]:
        if self._epoch is None or self._epoch[:2] != (self.seed, epoch):  # load_cursor_state may set the seed
            rng = random.Random(self.seed * 1_000_003 + epoch)
            if self.strata is None:
                order = list(range(self.num_tasks))
                rng.shuffle(order)
            else:
                order = stratified_order(self.strata, rng)
            self._epoch = (self.seed, epoch, order)
        return self._epoch[2]


def resume_mismatch(state: Mapping, cursor: TaskCursor) -> str | None:
    """Why a checkpoint's cursor state (``RolloutPool.cursor_state``) cannot go on in ``cursor``, or None when it
    can. Its position counts tasks of one particular order over one particular pool: resumed over a pool of another
    size, or with the order stratified where it was shuffled (or back), it would play tasks the run never
    scheduled and skip others, silently. Checkpoints saved before the order was recorded carry neither field and
    are not checked.

    >>> resume_mismatch({"position": 6, "seed": 1, "num_tasks": 256, "order": "shuffled"}, TaskCursor(256, 1))
    >>> resume_mismatch({"position": 6, "seed": 1, "num_tasks": 256, "order": "stratified"}, TaskCursor(256, 1))[:80]
    "the checkpoint's task cursor walks 256 tasks in a stratified order; this run has"
    """
    saved = (state.get("num_tasks", cursor.num_tasks), state.get("order", cursor.order))
    if saved == (cursor.num_tasks, cursor.order):
        return None
    return (f"the checkpoint's task cursor walks {saved[0]} tasks in a {saved[1]} order; this run has "
            f"{cursor.num_tasks} tasks in a {cursor.order} order, so resuming would play other tasks than the run "
            "scheduled. Fix: resume with the run's own task settings (its config.yaml: tasks.*, "
            "train.stratify_kinds), or start a new run directory")
