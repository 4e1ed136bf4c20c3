"""The rollout pool's workers: who is in the pool, and how that changes (a death, a resize), in sync or async mode.

A member is a rollout worker, its process tree (what to reap when it dies, actors/worker_recovery.py) and its slot:
the worker index it was started with, which is also its bundle in the run's placement group. A worker that dies is
reaped and replaced in its slot, serving the pool's current adapter version before it takes work. A replacement or
an added worker waits at most ``placement_timeout_s`` for room (``cluster.plan.wait_for_room``): past it, the pool
goes on with the workers it has (the scale-down case: a node the autoscaler took away, a cluster full of other
jobs), and only a pool left with no worker fails.

``lock`` orders membership changes against adapter syncs: a sync holds it while it loads a version on the members,
so a worker that joins meanwhile is checked against the version the sync left and catches up before it joins. The
episode players read ``snapshot()`` and never hold it, so an async producer keeps playing on the members it saw.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, MutableMapping

from actors.adapters import checksum
from actors.config import RolloutConfig
from actors.worker_recovery import WorkerLostError, reap_on_node
from cluster.plan import PlanDoesNotFitError


class WorkerSet:
    def __init__(self, workers: list, trees: list, *, respawn: tuple[str, RolloutConfig] | None, placement,
                 placement_timeout_s: float, faults: MutableMapping[str, int],
                 serving: Callable[[], tuple[int, Mapping[str, bytes] | None]]):
        """``serving()``: the pool's current (version, adapter files), which a new member must serve first."""
        self.workers, self.trees, self.slots = list(workers), list(trees), list(range(len(workers)))
        self.respawn, self.placement, self.placement_timeout_s = respawn, placement, placement_timeout_s
        self.faults, self.current = faults, serving
        for key in ("worker_deaths", "workers_replaced", "workers_dropped", "workers_not_placed",
                    "engine_processes_reaped"):
            faults.setdefault(key, 0)
        self.lock = threading.RLock()

    def snapshot(self) -> list:
        return list(self.workers)

    def replace(self, dead, err: Exception) -> None:
        """Reap ``dead``'s engine and start its replacement in its slot; if the replacement finds no room in time
        and other workers are left, go on without it. Nothing to do if ``dead`` already left the pool (a resize,
        or another shard's error found it first)."""
        import ray

        with self.lock:
            at = next((i for i, w in enumerate(self.workers) if w is dead), None)
            if at is None:
                return
            slot = self.slots[at]
            self.faults["worker_deaths"] += 1
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            limit = 0 if self.respawn is None else self.respawn[1].max_worker_restarts
            if self.faults["workers_replaced"] >= limit:
                raise WorkerLostError(
                    f"rollout worker {slot} died ({first_line}) and the pool may not replace it "
                    f"({self.faults['workers_replaced']} of {limit} replacements used). Fix: raise "
                    "rollout.max_worker_restarts, and look at the worker's log for why it died (OOM: lower "
                    "rollout.kv_cache_gib or max_num_seqs); resume with --resume") from err
            ray.kill(dead, no_restart=True)
            self.faults["engine_processes_reaped"] += len(reap_on_node(self.trees[at]))
            try:
                self.workers[at], self.trees[at] = self._start(slot)
            except PlanDoesNotFitError as no_room:
                if len(self.workers) == 1:
                    raise WorkerLostError(f"rollout worker {slot} died ({first_line}) and no worker is left: its "
                                          f"replacement {no_room}") from err
                del self.workers[at], self.trees[at], self.slots[at]
                self.faults["workers_dropped"] += 1
                print(f"rollout worker {slot} died ({first_line}); no room for a replacement, the pool goes on "
                      f"with {len(self.workers)} workers ({no_room})", flush=True)
                return
            self.faults["workers_replaced"] += 1
            print(f"rollout worker {slot} died ({first_line}); replaced, serving version {self.current()[0]}",
                  flush=True)

    def grow(self, num_workers: int) -> None:
        """Start workers until there are ``num_workers``, or until one finds no room in time (counted)."""
        while len(self.workers) < num_workers:
            slot = min(set(range(num_workers + len(self.slots))) - set(self.slots))
            try:
                worker, tree = self._start(slot)  # the engine starts outside the lock: a sync may run meanwhile
            except PlanDoesNotFitError as no_room:
                self.faults["workers_not_placed"] += 1
                print(f"resize to {num_workers} rollout workers stopped at {len(self.workers)}: {no_room}",
                      flush=True)
                return
            with self.lock:
                self._catch_up(worker, slot)
                self.workers.append(worker)
                self.trees.append(tree)
                self.slots.append(slot)

    def shrink(self, num_workers: int) -> None:
        """Stop the newest workers until there are ``num_workers``; each finishes the calls it has queued (an
        async producer's episodes) before it is killed and its engine reaped."""
        import ray

        while len(self.workers) > num_workers:
            with self.lock:
                worker, tree = self.workers.pop(), self.trees.pop()
                self.slots.pop()
            try:
                ray.get(worker.serving.remote())  # queued behind its running calls: a drain
            except ray.exceptions.RayActorError:
                pass  # died meanwhile: reaped below all the same
            ray.kill(worker, no_restart=True)
            self.faults["engine_processes_reaped"] += len(reap_on_node(tree))

    def _start(self, slot: int) -> tuple:
        """A new worker in ``slot`` serving the current adapter version (checksum checked), and its process tree."""
        import ray

        from actors.remote import start_rollout_worker

        model_path, cfg = self.respawn
        worker = start_rollout_worker(model_path, cfg, slot, self.placement, timeout_s=self.placement_timeout_s)
        self._catch_up(worker, slot)
        return worker, ray.get(worker.process_tree.remote())

    def _catch_up(self, worker, slot: int) -> None:
        import ray

        version, files = self.current()
        if not version or ray.get(worker.serving.remote())["version"] == version:
            return
        info = ray.get(worker.load_adapter.remote(version, files))
        if info["checksum"] != checksum(files):
            raise WorkerLostError(f"new rollout worker {slot} serves checksum {info['checksum']}, not version "
                                  f"{version}'s {checksum(files)}")
