"""Reward actor failures on a real local Ray cluster: a real ``RewardActor`` behind a switch that makes it hang, raise,
die (``ray.kill`` mid-call, or its process exits) or return a NaN, for the first calls or on one poison episode.
Each case ends with the full batch scored exactly as an undisturbed actor scores it, or with the rule of
actors/scoring.py (the unscorable episode marked, its group left out of the step), and the counts asserted.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from actors.scoring import RewardScoringError, score_with_retries
from rewards import RewardActor, RewardConfig
from rewards._examples import example_task, example_trajectory, tool_call

pytestmark = pytest.mark.timeout(300)

TIMEOUT_S = 2.0  # score_timeout_s of the tests; an undisturbed batch scores in milliseconds
HANG_S = 60.0  # a "hung" call sleeps this long: far past the timeout
POISON = ("b", 1)  # (task_id, sample_index) of the poison episode


def _tasks() -> dict:
    return {"a": dataclasses.replace(example_task(answer=391), task_id="a"),
            "b": dataclasses.replace(example_task(answer=12, expression="3 * 4"), task_id="b"),
            "c": dataclasses.replace(example_task(answer=42, expression="6 * 7"), task_id="c")}


def _batch() -> list:
    """Three groups of two episodes, right and wrong answers, as actors.episode shapes them."""
    answers = {"a": ("391", "390"), "b": ("12", "13"), "c": ("42", "24")}
    out = []
    for task_id, pair in answers.items():
        for i, answer in enumerate(pair):
            t = example_trajectory(calls=[tool_call(answer)], final_answer=answer, task_id=task_id)
            out.append(dataclasses.replace(t, sample_index=i))
    return out


class Count:
    """Calls made on the reward actors of one test, across replacements."""

    def __init__(self):
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n

    def value(self) -> int:
        return self.n


class Mischief:
    """A real RewardActor behind a switch: ``mode`` (sleep, raise, exit, nan) on the first ``calls`` calls counted by
    ``counter`` across replacements, or, with ``poison``, on every call that holds that episode."""

    def __init__(self, cfg, counter, *, mode: str, calls: int = 0, poison: tuple | None = None):
        self.inner, self.counter = RewardActor(cfg), counter
        self.mode, self.calls, self.poison = mode, calls, poison

    def ready(self) -> bool:
        return True

    def score_batch(self, trajectories, tasks):
        import ray

        n = ray.get(self.counter.add.remote())
        if self.poison is None:
            hit = n <= self.calls
        else:
            hit = any((t.task_id, t.sample_index) == self.poison for t in trajectories)
        scored = self.inner.score_batch(trajectories, tasks)
        if not hit:
            return scored
        if self.mode == "sleep":
            time.sleep(HANG_S)
        elif self.mode == "raise":
            raise RuntimeError("judge unavailable (injected)")
        elif self.mode == "exit":
            os._exit(1)
        elif self.mode == "nan":
            return [dataclasses.replace(t, reward=float("nan")) if (t.task_id, t.sample_index) == self.poison else t
                    for t in scored]
        return scored


def _starter(ray, counter, **mischief):
    """``start(cfg)`` for score_with_retries: a Mischief actor, up when it returns."""
    def start(cfg):
        actor = ray.remote(Mischief).options(num_cpus=0.1).remote(cfg, counter, **mischief)
        ray.get(actor.ready.remote())
        return actor
    return start


def _run(ray, cfg, **mischief):
    """Score the batch on a Mischief actor; returns (result or error, faults, calls made, expected rewards)."""
    counter = ray.remote(Count).options(num_cpus=0.1).remote()
    start = _starter(ray, counter, **mischief)
    faults: dict = {}
    try:
        result = score_with_retries(start(cfg), _batch(), _tasks(), cfg=cfg, faults=faults, start=start)
    except RewardScoringError as err:
        result = err
    expected = {(t.task_id, t.sample_index): t.reward for t in RewardActor(cfg).score_batch(_batch(), _tasks())}
    calls = ray.get(counter.value.remote())
    if not isinstance(result, Exception):
        ray.kill(result.actor)
    ray.kill(counter)
    return result, faults, calls, expected


def _rewards(trajectories) -> dict:
    return {(t.task_id, t.sample_index): t.reward for t in trajectories}


def _assert_poison_group_dropped(result, expected):
    kept = _rewards(result.trajectories)
    assert kept == {k: v for k, v in expected.items() if k[0] != "b"}
    assert [(t.task_id, t.sample_index) for t in result.dropped] == [("b", 0), ("b", 1)]
    marked = [t for t in result.dropped if t.reward_breakdown.get("reward_failed") == 1.0]
    assert [(t.task_id, t.sample_index, t.reward) for t in marked] == [("b", 1, 0.0)]
    assert result.dropped[0].reward == expected[("b", 0)]  # the groupmate keeps its score, for inspection


def test_a_slow_actor_is_killed_replaced_and_the_batch_scored(ray_cluster):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    result, faults, calls, expected = _run(ray_cluster, cfg, mode="sleep", calls=2)
    assert _rewards(result.trajectories) == expected and len(expected) == 6
    assert faults == {"reward_retries": 2, "reward_actor_restarts": 2, "episodes_unscored": 0, "episodes_dropped": 0}
    assert calls == 3


def test_a_raising_actor_is_retried_in_place(ray_cluster):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    result, faults, calls, expected = _run(ray_cluster, cfg, mode="raise", calls=2)
    assert _rewards(result.trajectories) == expected
    assert faults == {"reward_retries": 2, "reward_actor_restarts": 0, "episodes_unscored": 0, "episodes_dropped": 0}
    assert calls == 3


def test_an_actor_killed_mid_call_is_replaced(ray_cluster):
    ray = ray_cluster
    cfg = RewardConfig(score_timeout_s=30.0, score_retries=2)  # the death, not the timeout, must end the call
    counter = ray.remote(Count).options(num_cpus=0.1).remote()
    start = _starter(ray, counter, mode="sleep", calls=1)
    first = start(cfg)

    def kill_when_busy():
        deadline = time.monotonic() + 20
        while ray.get(counter.value.remote()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        ray.kill(first)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    faults: dict = {}
    started = time.monotonic()
    result = score_with_retries(first, _batch(), _tasks(), cfg=cfg, faults=faults, start=start)
    killer.join()
    assert time.monotonic() - started < 15  # the death was noticed, not waited out
    assert _rewards(result.trajectories) == _rewards(RewardActor(cfg).score_batch(_batch(), _tasks()))
    assert faults == {"reward_retries": 1, "reward_actor_restarts": 1, "episodes_unscored": 0, "episodes_dropped": 0}
    assert result.actor is not first
    ray.kill(result.actor)


def test_a_poison_episode_that_raises_is_isolated_and_its_group_dropped(ray_cluster):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    result, faults, calls, expected = _run(ray_cluster, cfg, mode="raise", poison=POISON)
    _assert_poison_group_dropped(result, expected)
    assert faults == {"reward_retries": 2, "reward_actor_restarts": 0, "episodes_unscored": 1, "episodes_dropped": 2}
    assert calls == 3 + 6  # three tries of the batch, then one call per episode


@pytest.mark.parametrize("mode", ["exit", "sleep"])
def test_a_poison_episode_that_kills_or_hangs_the_actor_is_isolated(ray_cluster, mode):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    result, faults, calls, expected = _run(ray_cluster, cfg, mode=mode, poison=POISON)
    _assert_poison_group_dropped(result, expected)
    # a replacement after each of the three tries of the batch, and after the poison's own call
    assert faults == {"reward_retries": 2, "reward_actor_restarts": 4, "episodes_unscored": 1, "episodes_dropped": 2}
    assert calls == 3 + 6


def test_a_nan_reward_is_marked_without_retries(ray_cluster):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    result, faults, calls, expected = _run(ray_cluster, cfg, mode="nan", poison=POISON)
    _assert_poison_group_dropped(result, expected)
    assert faults == {"reward_retries": 0, "reward_actor_restarts": 0, "episodes_unscored": 1, "episodes_dropped": 2}
    assert calls == 1


def test_a_scorer_that_fails_on_everything_ends_the_step_with_the_fix(ray_cluster):
    cfg = RewardConfig(score_timeout_s=TIMEOUT_S, score_retries=2)
    err, faults, calls, _ = _run(ray_cluster, cfg, mode="raise", calls=10**6)
    assert isinstance(err, RewardScoringError)
    text = str(err)
    assert "judge unavailable (injected)" in text and "Fix:" in text and "score_timeout_s" in text
    # three tries of the batch, then three episodes alone fail in a row and the other three are not tried
    assert calls == 3 + 3
    assert faults == {"reward_retries": 2, "reward_actor_restarts": 0, "episodes_unscored": 6, "episodes_dropped": 6}


def test_the_pool_replaces_a_dead_reward_actor_and_counts_it(ray_cluster, tmp_path):
    """The pool's wiring (actors.remote.start_rollout_pool with reward_cfg): a reward actor killed before the step
    is replaced from the config; the step returns the full batch and its timings carry the counts. The rollout
    worker is a stand-in that returns crafted episodes (the engine is not what this test is about)."""
    from actors.remote import start_reward_actor, start_rollout_pool
    from actors.trajectory import read_parquet

    ray = ray_cluster
    cfg = RewardConfig(score_timeout_s=30.0, score_retries=2)
    worker = ray.remote(CraftedWorker).options(num_cpus=0.1).remote()
    reward_actor = start_reward_actor(cfg)
    ray.get(reward_actor.stats.remote([]))  # up and answering
    ray.kill(reward_actor)
    tasks = list(_tasks().values())
    pool = start_rollout_pool([worker], reward_actor, tasks, tasks_per_step=3, seed=0, engine_dtype="float32",
                              out_dir=str(tmp_path / "trajectories"), reward_cfg=cfg)
    batch, timings = ray.get(pool.get_batch.remote(0))
    assert _rewards(batch) == _rewards(RewardActor(cfg).score_batch(_batch(), _tasks()))
    assert {k: timings[k] for k in ("reward_retries", "reward_actor_restarts", "episodes_unscored",
                                    "episodes_dropped")} == {"reward_retries": 1, "reward_actor_restarts": 1,
                                                             "episodes_unscored": 0, "episodes_dropped": 0}
    assert len(read_parquet(tmp_path / "trajectories" / "step_00000.parquet")) == 6
    batch, timings = ray.get(pool.get_batch.remote(1))  # the replacement serves the next step
    assert len(batch) == 6 and timings["reward_actor_restarts"] == 1 and timings["reward_retries"] == 1
    for actor in (pool, worker):
        ray.kill(actor)


class CraftedWorker:
    """Stands in for a rollout worker: the crafted episodes of ``_batch`` for the tasks asked."""

    def process_tree(self) -> dict:
        return {"pid": os.getpid(), "children": []}

    def run_episodes(self, tasks, **_):
        ids = {t.task_id for t in tasks}
        return [t for t in _batch() if t.task_id in ids]


def test_the_scoring_settings_are_validated():
    problems = RewardConfig(score_timeout_s=0.0, score_retries=-1).validate()
    assert [p.split(":")[0] for p in problems] == ["score_timeout_s", "score_retries"]
    assert all("Fix:" in p for p in problems)
    assert RewardConfig(score_timeout_s=float("inf")).validate() and RewardConfig(score_retries=True).validate()
