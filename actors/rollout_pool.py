"""The rollout pool: owns the rollout workers and the reward actor, hands out scored batches, syncs adapters.

It lives outside the learner group (a learner restart does not lose it) and is the producer of the
producer/consumer pair: every learner rank asks it for step k's batch; the first ask plays and scores the
episodes, later asks for the same step get the same batch. The task cursor is its state, saved in checkpoints.
A learner group that Ray Train restarts from a checkpoint gets the batch the pool was playing when it died, if that
batch was played from the checkpoint's cursor with the checkpoint's adapter (``load_cursor_state``).

Every sync is verified (veRL issue 7495 is an adapter sync that silently pushed nothing): each worker must report
the new version and the checksum of the bytes the learner sent, and its logprobs on a fixed probe sequence must
match the learner's, and the change it shows must match the learner's own change, within tolerances set by the
engine dtype (actors.config.ENGINE_DTYPES, measured in docs/design.md).

A worker that dies mid-step (``kill -9``, OOM, a lost node) is replaced (actors/worker_set.py,
actors/worker_recovery.py): its engine's processes are reaped, a new worker with the same index starts and loads the
current adapter version (checksum checked) before it takes work, and the dead worker's share of the episodes is
played again on it, so the step still returns the full batch. A replacement that finds no room within
``ray.placement_timeout_s`` is left out and the pool goes on with fewer workers. At most
``rollout.max_worker_restarts`` replacements per run; the counts go into every step's metrics (``worker_deaths``,
``workers_dropped``, ``episodes_rerun``, ...).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from actors.adapters import checksum
from actors.config import ENGINE_DTYPES, RolloutConfig
from actors.evaluation import evaluate_batch
from actors.scoring import score_with_retries
from actors.task_order import TaskCursor, resume_mismatch
from actors.trajectory import Trajectory, write_parquet
from actors.worker_set import WorkerSet
from envs.tasks import Task


class SyncError(RuntimeError):
    """A rollout worker does not serve what the learner sent; the run must not go on sampling a stale policy."""


class RolloutPool:
    def __init__(self, workers: Sequence, reward_actor, tasks: Sequence[Task], *, tasks_per_step: int,
                 seed: int, strata: tuple | None = None, engine_dtype: str = "float32", out_dir: str | None = None,
                 respawn: tuple[str, RolloutConfig] | None = None, reward_cfg=None, judge=None,
                 max_staleness: int = 0, last_step: int | None = None, placement=None,
                 placement_timeout_s: float = 300.0):
        """``respawn``: (model path, rollout config) to start replacement workers with; None = a dead worker ends
        the run with WorkerLostError. ``reward_cfg``: the reward actor's RewardConfig, to replace it when it dies or
        hangs (actors/scoring.py); None = defaults and no replacement. ``max_staleness`` > 0: async mode
        (actors/async_producer.py), batches played ahead up to step ``last_step``. ``placement``: the run's held
        placement group (cluster.plan.Placement); a replacement takes the dead actor's bundle, and waits at most
        ``placement_timeout_s`` for room (actors/worker_set.py). ``strata``: a kind per task, to play the tasks in a
        stratified order (actors/task_order.py); None = a plain shuffle."""
        import ray

        from actors.async_producer import AsyncProducer

        self.tolerance = ENGINE_DTYPES[engine_dtype]
        self.reward_actor = reward_actor
        self.respawn, self.reward_cfg, self.judge = respawn, reward_cfg, judge  # judge: for a replaced reward actor
        self.placement = placement
        self.faults = {"episodes_rerun": 0, "batches_kept_on_restore": 0}
        self.members = WorkerSet(list(workers), ray.get([w.process_tree.remote() for w in workers]), respawn=respawn,
                                 placement=placement, placement_timeout_s=placement_timeout_s, faults=self.faults,
                                 serving=lambda: (self.version, self._files))
        self._files: dict[str, bytes] | None = None  # the adapter the workers serve now, for replacements
        self.tasks = list(tasks)
        self.by_id = {t.task_id: t for t in self.tasks}
        self.tasks_per_step = tasks_per_step
        self.cursor = TaskCursor(len(self.tasks), seed, strata=strata)  # strata: a kind per task, or None
        self.out_dir = Path(out_dir) if out_dir else None
        self.version = 0
        self.consumed_position = 0  # cursor position after the last batch handed out
        self._batches: dict[int, tuple[list[Trajectory], dict]] = {}
        self.batches_served = 0  # > 0 when a learner group starts: it replaces one that died (jobs/train.py)
        self._played: dict[int, tuple[int, str, int]] = {}  # sync mode: step -> (cursor from, adapter, cursor to)
        self._lock = threading.Lock()
        self.producer = AsyncProducer(self, max_staleness, last_step) if max_staleness > 0 else None

    def get_batch(self, step: int) -> tuple[list[Trajectory], dict]:
        """Scored trajectories of ``step`` and timings; computed once per step whoever asks first. A failing reward
        actor costs the episodes it cannot score and their groups, not the step (actors/scoring.py). In async mode
        the producer played the batch ahead, within the staleness bound (actors/async_producer.py)."""
        with self._lock:
            self.batches_served += 1
            if step not in self._batches:
                self._batches = {k: v for k, v in self._batches.items() if k >= step - 1}
                self._played = {k: v for k, v in self._played.items() if k in self._batches}
                if self.producer is not None:
                    scored, timings = self.producer.take(step)
                else:
                    start, served = self.cursor.position, self._served_checksum()
                    scored, timings = self._play_and_score([self.tasks[i] for i in
                                                            self.cursor.take(self.tasks_per_step)])
                    self.consumed_position = self.cursor.position
                    self._played[step] = (start, served, self.cursor.position)
                if self.out_dir:
                    write_parquet(scored, self.out_dir / f"step_{step:05d}.parquet")
                self._batches[step] = (scored, timings)
            scored, timings = self._batches[step]
            return scored, timings | self.faults

    def _served_checksum(self) -> str:
        return checksum(self._files) if self._files else "base"

    def _play_and_score(self, tasks: Sequence[Task], version: int | None = None) -> tuple[list[Trajectory], dict]:
        """Play one batch of tasks (with ``version``, default the one served now) and score it."""
        started = time.perf_counter()
        trajectories = self._play(tasks, **({} if version is None else {"version": version}))
        rollout_s = time.perf_counter() - started
        scored, self.reward_actor, _ = score_with_retries(self.reward_actor, trajectories, self.by_id,
                                                          cfg=self.reward_cfg, faults=self.faults,
                                                          start=self._start_reward_actor)
        return scored, {"rollout_s": rollout_s, "reward_s": time.perf_counter() - started - rollout_s}

    def sync(self, files: Mapping[str, bytes], probe_ids: Sequence[int], positions: Sequence[int],
             learner_after: Sequence[float], learner_before: Sequence[float] | None = None, *,
             skip_load: bool = False, sampled: tuple[int, Sequence[float]] | None = None) -> dict:
        """Load the adapter as the next version on every worker and verify it (SyncError names a wrong worker).

        Versions count up within the pool (a restarted learner never reuses a number the workers have seen).
        ``positions`` index the probe's logprob vector (the sampled tokens); ``learner_before/after`` are the
        learner's logprobs there before and after its update. ``sampled``: (version, logprobs at ``positions``)
        that a worker returned when it sampled the probe episode (behavior logprobs); if that version is the one
        served now, they are the workers' "before" (every worker serves that version, checksum-checked at its
        sync), which saves one probe call per worker. A worker that dies during the sync is replaced (or left out)
        and the sync goes on with the workers there are then; a replacement that joins after the load serves the
        new version already (checksum checked), so it is checked against the learner's "after" only. ``skip_load``
        exists for the test that proves a skipped sync is caught.
        """
        started = time.perf_counter()
        at = list(positions)
        with self.members.lock:  # a worker joining meanwhile catches up with this version first
            previous, version = self.version, self.version + 1
            from_behavior = sampled is not None and sampled[0] == previous
            old, infos = {}, {}  # id(worker) -> (worker, its logprobs under `previous` / what it serves after)
            while True:  # a worker that dies meanwhile is replaced (or left out); its replacement serves `previous`
                workers = self.members.snapshot()
                if from_behavior:
                    old = {id(w): (w, list(sampled[1])) for w in workers}
                else:
                    got = self._ask([w for w in workers if id(w) not in old],
                                    lambda w: w.prompt_logprobs.remote(probe_ids, previous))
                    old.update({k: (w, [lp[i] for i in at]) for k, (w, lp) in got.items()})
                probed = time.perf_counter()
                infos.update(self._ask([w for w in workers if id(w) not in infos],
                                       (lambda w: w.serving.remote()) if skip_load else
                                       (lambda w: w.load_adapter.remote(version, files))))
                if all(id(w) in old and id(w) in infos for w in self.members.snapshot()):
                    break
            if not skip_load:
                self.version = version  # taken even if verification fails: the number is spent on the workers
                self._files = dict(files)
        loaded = time.perf_counter()
        new: dict = {}
        while True:  # a replacement from here on caught up with `version` itself (checksum checked): no "before"
            workers = self.members.snapshot()
            infos.update(self._ask([w for w in workers if id(w) not in infos], lambda w: w.serving.remote()))
            new.update(self._ask([w for w in workers if id(w) not in new and id(w) in infos],
                                 lambda w: w.prompt_logprobs.remote(probe_ids, infos[id(w)][1]["version"])))
            workers = self.members.snapshot()
            if all(id(w) in new and id(w) in infos for w in workers):
                break
        report = verify_sync([infos[id(w)][1] for w in workers], version, checksum(files), learner_after,
                             learner_before, [[new[id(w)][1][i] for i in at] for w in workers],
                             [old[id(w)][1] if id(w) in old else None for w in workers], tolerance=self.tolerance)
        done = time.perf_counter()
        report.update(sync_s=done - started, sync_probe_old_s=probed - started, sync_load_s=loaded - probed,
                      sync_probe_new_s=done - loaded, sync_before_from_behavior=float(from_behavior))
        return report

    def _ask(self, workers: Sequence, call) -> dict:
        """``call(worker)`` (an ObjectRef) on each worker at once; ``{id(worker): (worker, result)}`` of those that
        answered. One that died is replaced or left out (actors/worker_set.py) before this returns; the caller asks
        the members there are then."""
        import ray

        refs = [(w, call(w)) for w in workers]
        got = {}
        for w, ref in refs:
            try:
                got[id(w)] = (w, ray.get(ref))
            except ray.exceptions.RayActorError as err:
                self.members.replace(w, err)
        return got

    def evaluate(self, tasks: Sequence[Task], version: int | None = None, name: str = "eval") -> dict:
        """One greedy episode per held-out task under ``version`` (default: the one served now), across workers.
        The episodes go to ``<out_dir>/../eval/<name>.parquet`` for inspection."""
        version = self.version if version is None else version
        started = time.perf_counter()
        trajectories = self._play(tasks, samples_per_task=1, temperature=0.0, version=version)
        if self.out_dir:
            write_parquet(trajectories, self.out_dir.parent / "eval" / f"{name}.parquet")
        return evaluate_batch(trajectories) | {"version": version, "eval_s": time.perf_counter() - started}

    def _play(self, tasks: Sequence[Task], **episode_args) -> list[Trajectory]:
        """Split the tasks into one shard per worker, play them, and gather the trajectories in shard order. A
        worker that dies is replaced (or left out: actors/worker_set.py) and its shard played again on the workers
        there are then (episode seeds depend on task and sample index only)."""
        import ray

        tasks, n = list(tasks), len(self.members.workers)
        shards = {s: tasks[s::n] for s in range(n) if tasks[s::n]}
        done: dict[int, list[Trajectory]] = {}
        while shards:
            workers = self.members.snapshot()
            calls = {s: (workers[s % len(workers)], shard) for s, shard in shards.items()}
            refs = {s: (worker, worker.run_episodes.remote(shard, **episode_args)) for s, (worker, shard) in
                    calls.items()}
            for s, (worker, ref) in refs.items():
                try:
                    done[s] = ray.get(ref)
                    del shards[s]
                except ray.exceptions.RayActorError as err:
                    self.members.replace(worker, err)
                    per_task = episode_args.get("samples_per_task") or self.respawn[1].samples_per_task
                    self.faults["episodes_rerun"] += len(shards[s]) * per_task
        return [t for s in sorted(done) for t in done[s]]

    def _start_reward_actor(self, cfg):
        """A replacement reward actor, with the run's LLM judge if it has one."""
        from actors.remote import start_reward_actor

        return start_reward_actor(cfg, judge=self.judge, placement=self.placement)

    def resize(self, num_workers: int) -> list[dict]:
        """Elastic pool: start workers (each serving the current version before it takes work; as many as find
        room within the placement timeout) or stop the newest ones (each finishes its queued episodes, then its
        engine is reaped); returns what every worker serves. Sync mode: between steps. Async mode: any time; the
        producer's next batch uses the workers there are then."""
        if num_workers < 1:
            raise ValueError(f"a rollout pool needs >= 1 worker, got {num_workers}")
        if self.respawn is None:
            raise ValueError("this pool was started without respawn=(model path, rollout config): it cannot start "
                             "workers. Fix: start it with start_rollout_pool(..., respawn=...) as jobs.train does")
        with self._lock if self.producer is None else contextlib.nullcontext():  # sync: not during a step
            self.members.grow(num_workers)
            self.members.shrink(num_workers)
            return self.serving()

    def served_a_learner(self) -> bool:
        """Whether a learner group has taken batches from this pool already (a new one is a restart)."""
        return self.batches_served > 0

    def cursor_state(self) -> dict:
        """The task cursor after the last batch handed to the learner (in async mode the producer is ahead), and
        the adapter the workers serve (a checkpoint saves this after its sync: the checkpoint's own adapter)."""
        return {"position": self.consumed_position, "seed": self.cursor.seed, "version": self.version,
                "adapter_checksum": self._served_checksum(), "num_tasks": self.cursor.num_tasks,
                "order": self.cursor.order}

    def load_cursor_state(self, state: Mapping) -> None:
        """Rewind to a checkpoint's cursor. A learner restarted by Ray Train (the pool outlived it) asks for the
        step after its checkpoint again: if the pool already played that step's batch from the same cursor with
        the checkpoint's adapter (the learner died while it played or learned), the batch is kept, so no episode
        is lost or played twice and the run goes on as if never interrupted. Other batches are thrown away.
        A state saved over another pool size or order is refused (``resume_mismatch``); nothing is changed then."""
        if (problem := resume_mismatch(state, self.cursor)) is not None:
            raise ValueError(problem)

        def load():
            position, seed = int(state["position"]), int(state["seed"])
            kept = {k: v for k, v in self._played.items()
                    if seed == self.cursor.seed and v[:2] == (position, state.get("adapter_checksum"))}
            self._batches = {k: self._batches[k] for k in kept}
            self._played = kept
            self.faults["batches_kept_on_restore"] += len(kept)
            self.cursor.position, self.cursor.seed = (max(v[2] for v in kept.values()) if kept else position), seed
            self.consumed_position = position

        if self.producer is not None:
            self.producer.restart(load)  # batches played ahead belong to the old position: thrown away
        else:
            with self._lock:  # waits for a batch still being played for the learner that died
                load()

    def serving(self) -> list[dict]:
        import ray

        return ray.get([w.serving.remote() for w in self.members.snapshot()])


def verify_sync(infos: Sequence[Mapping], version: int, expected_checksum: str, learner_after: Sequence[float],
                learner_before: Sequence[float] | None, worker_new: Sequence[Sequence[float]],
                worker_old: Sequence[Sequence[float] | None], tolerance: tuple[float, float] = ENGINE_DTYPES["float32"]
                ) -> dict:
    """The checks of one sync, as a pure function.

    1. every worker reports the new version and the checksum of the bytes the learner sent;
    2. its probe logprobs match the learner's within the absolute tolerance of the engine's dtype;
    3. the *change* it shows on the probe (new version minus previous) matches the learner's own change within
       the change tolerance, so a stale engine (change 0) is caught whenever the learner moved more than that.
       A step that did not move the policy passes: nothing new to serve.
    """
    abs_tol, delta_tol = tolerance
    problems, errors, delta_errors = [], [], []
    change = _mean_abs(learner_after, learner_before) if learner_before is not None else None
    for info, new, old in zip(infos, worker_new, worker_old):
        w = info.get("worker_index")
        if info.get("version") != version or info.get("checksum") != expected_checksum:
            problems.append(f"worker {w} serves version {info.get('version')} checksum {info.get('checksum')}, "
                            f"expected version {version} checksum {expected_checksum}")
            continue
        err = _mean_abs(new, learner_after)
        errors.append(err)
        if err > abs_tol:
            problems.append(f"worker {w}: probe logprobs differ from the learner's by {err:.4f} on average "
                            f"(tolerance {abs_tol})")
        if learner_before is not None and old is not None:  # None: joined after the load, nothing "before"
            delta = _mean_abs([a - b for a, b in zip(new, old)],
                              [a - b for a, b in zip(learner_after, learner_before)])
            delta_errors.append(delta)
            if delta > delta_tol:
                problems.append(f"worker {w}: the policy change it serves differs from the learner's by {delta:.4f} "
                                f"per token (learner moved {change:.4f}; tolerance {delta_tol}): the new "
                                "adapter is not in effect")
    if problems:
        raise SyncError("adapter sync failed: " + "; ".join(problems))
    return {"version": version, "checksum": expected_checksum, "probe_error": max(errors, default=0.0),
            "probe_delta_error": max(delta_errors, default=0.0), "probe_change": change if change is not None
            else 0.0, "probe_discriminating": float(change is not None and change > 3 * delta_tol)}


def _mean_abs(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return float("inf")
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)
