"""``kill -9`` of the learner worker mid-run, under `ray job submit`: Ray Train's FailureConfig restarts the learner
group from the latest checkpoint; the rollout pool (outside the group) outlives it and hands the restarted learner
the batch it was playing when the learner died, so no episode is lost or played twice; the run finishes with one
metrics line per step; and the resumed learner equals the checkpoint exactly: the checkpoint plus the stored batch,
replayed here in a fresh learner, gives the next checkpoint's adapter, optimizer moments, step and RNG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import psutil
import pytest

from tests.jobs.conftest import BIN, head_cluster, submit  # noqa: F401  (head_cluster: a fixture)

# slow: its own Ray cluster, engine and two learner starts (~4 min); CI runs it in its second stage (.ci/run)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

STEPS, TASKS_PER_STEP, SAMPLES = 3, 2, 4
RUN = ["--config", "configs/train.yaml", f"train.steps={STEPS}", f"train.tasks_per_step={TASKS_PER_STEP}",
       f"rollout.samples_per_task={SAMPLES}", "train.checkpoint_every=1", "train.max_failures=1", "eval.every=-1",
       "rollout.kv_cache_gib=1.0"]


def _reported_to_ray_train(run_dir, step: int) -> bool:
    """Ray Train holds a checkpoint of ``step`` (what its FailureConfig restarts from)."""
    return any(json.loads(p.read_text())["step"] == step for p in (run_dir / "ray_train").rglob("step.json"))


def _pool_playing_a_batch(env: dict, address: str) -> bool:
    """The rollout pool is inside ``get_batch`` (Ray's task list, via the CLI that holds the cluster's token).
    Once checkpoint 1 is reported, that is step 2's batch: the learner has asked for it and the pool plays it. A
    kill before the ask would leave no batch in flight to keep (the CI failure of stop 22: 0 kept)."""
    proc = subprocess.run([str(BIN / "ray"), "list", "tasks", "--address", address, "--format", "json",
                           "--filter", "name=RolloutPool.get_batch", "--filter", "state=RUNNING"],
                          env=env, capture_output=True, text=True, timeout=60)
    try:
        return proc.returncode == 0 and bool(json.loads(proc.stdout or "[]"))
    except ValueError:  # no such task: the CLI prints "No resource in the cluster", not an empty JSON list
        return False


def _learner_workers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if "RayTrainWorker" in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


def test_a_killed_learner_resumes_exactly_from_its_checkpoint(head_cluster, sft_adapter, tmp_path):  # noqa: F811
    env, address = head_cluster
    run_dir = tmp_path / "run"
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(proc=submit(env, address, ["-m", "jobs.train", *RUN,
                                                                                   f"run.run_dir={run_dir}"],
                                                                    timeout=1300)))
    job.start()
    deadline = time.monotonic() + 900
    # Step 1 trained, synced, checkpointed, and step 2's batch being played: the kill lands in the batch in flight.
    while not (_reported_to_ray_train(run_dir, 1) and _pool_playing_a_batch(env, address)):
        assert job.is_alive() and time.monotonic() < deadline, result.get("proc")
        time.sleep(0.5)
    workers = _learner_workers()
    assert len(workers) == 1, f"expected the one learner worker, found {[w.cmdline() for w in workers]}"
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    job.join()
    proc = result["proc"]
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "learner restarted after a failure from" in proc.stdout, proc.stdout[-5000:]
    print(f"learner killed; the job finished {time.monotonic() - killed_at:.0f} s later")

    # One metrics line per step; the batch in flight was kept; the rollout worker never died.
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert history[1]["batches_kept_on_restore"] == 1, history[1]
    assert all(h["worker_deaths"] == 0 and h["skipped_update"] == 0 for h in history)

    # Episodes lost = 0: the task ids played are exactly the ones the cursor scheduled, each SAMPLES times.
    from actors.task_order import TaskCursor
    from actors.trajectory import read_parquet
    from envs.task_source import load_tasks
    from jobs.config import RunConfig
    from jobs.config_loader import load_config

    cfg = load_config(RunConfig, run_dir / "config.yaml")
    tasks = load_tasks(cfg.tasks)
    scheduled = Counter(tasks[i].task_id for i in TaskCursor(len(tasks), cfg.tasks.seed).take(STEPS * TASKS_PER_STEP))
    played = Counter(t.task_id for step in range(STEPS)
                     for t in read_parquet(run_dir / "trajectories" / f"step_{step:05d}.parquet"))
    assert played == Counter({k: n * SAMPLES for k, n in scheduled.items()})

    _replay_matches_the_next_checkpoint(cfg, run_dir)


def _replay_matches_the_next_checkpoint(cfg, run_dir) -> None:
    """Checkpoint 1 + step 2's stored batch in a fresh learner = checkpoint 2 (what the restarted learner wrote)."""
    import io

    import torch
    from safetensors.torch import load as load_safetensors

    from actors.trajectory import read_parquet
    from jobs.checkpoints import load_checkpoint
    from jobs.warm_start import warm_started_model
    from learners.learner import Learner

    torch.set_num_threads(1)  # as in the learner worker (Ray gives a 0.5-CPU actor one thread)
    learner = Learner(cfg.learner, warm_started_model(cfg.train.init_adapter, cfg.model.name),
                      temperature=cfg.rollout.temperature)
    ckpt = run_dir / "checkpoints"
    assert load_checkpoint(ckpt / "step_000001", learner) == 1
    learner.update(read_parquet(run_dir / "trajectories" / "step_00001.parquet"))
    got = learner.state()
    want_adapter = load_safetensors((ckpt / "step_000002" / "adapter" / "adapter_model.safetensors").read_bytes())
    got_adapter = load_safetensors(got["adapter"]["adapter_model.safetensors"])
    before = load_safetensors((ckpt / "step_000001" / "adapter" / "adapter_model.safetensors").read_bytes())
    assert max((want_adapter[k] - before[k]).abs().max().item() for k in want_adapter) > 1e-6  # step 2 moved it
    for k in want_adapter:
        torch.testing.assert_close(got_adapter[k], want_adapter[k], atol=1e-6, rtol=1e-5, msg=k)
    want = torch.load(ckpt / "step_000002" / "learner.pt", weights_only=False)
    mine = torch.load(io.BytesIO(got["learner.pt"]), weights_only=False)
    assert mine["step"] == want["step"] == 2
    assert torch.equal(mine["torch_rng"], want["torch_rng"])
    for a, b in zip(mine["optimizer"]["state"].values(), want["optimizer"]["state"].values()):
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-9, rtol=1e-5)
