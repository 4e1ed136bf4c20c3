"""A plan the cluster cannot hold fails the job in seconds, naming the missing resource, before any actor starts.

The job is jobs.train asking one GPU per rollout worker, submitted with `ray job submit` to a CPU-only
`ray start --head --num-cpus=2 --num-gpus=0` cluster: without the check, Ray would wait for that GPU forever.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.jobs.conftest import BIN, REPO, submit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAIL_WITHIN_S = 60  # measured ~10 s here (docs/cluster.md): upload, imports, ray.init, the check; no engine starts


@pytest.mark.parametrize("head_cluster", [["--num-gpus=0"]], indirect=True)
def test_gpu_plan_on_cpu_only_cluster_fails_fast_naming_gpu(head_cluster, tmp_path):
    env, address = head_cluster
    storage = tmp_path / "runs"
    started = time.monotonic()
    proc = submit(env, address, ["-m", "jobs.train", "rollout.num_gpus_per_worker=1", f"run.storage={storage}"],
                  timeout=FAIL_WITHIN_S * 3)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    print(f"ray job submit -> job failed after {elapsed:.1f} s")
    assert proc.returncode != 0, out[-3000:]
    assert elapsed < FAIL_WITHIN_S, f"the job took {elapsed:.0f} s to fail:\n{out[-3000:]}"

    (job_id,) = set(re.findall(r"raysubmit_\w+", out))
    status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job_id], env=env,
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert f"Job '{job_id}' failed" in status.stdout + status.stderr
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", address, job_id], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO).stdout
    assert "PlanDoesNotFitError" in logs and "nothing was started" in logs, logs[-3000:]
    assert re.search(r"GPU: a rollout actor needs 1 GPU on one node; the largest node has 0", logs), logs[-3000:]
    assert "rollout.num_gpus_per_worker" in logs  # the fix is named too
    assert not list(storage.glob("*/trajectories/*")) and not list(storage.glob("*/checkpoints/*"))


def test_placement_wait_is_bounded_and_releases_its_reservation(ray_cluster):
    """The check's placement group on a real cluster: released when ready, and a wait for nodes that never come
    (an autoscaler type that is not really there) ends at ray.placement_timeout_s with the bundle named."""
    from ray.util.placement_group import placement_group_table

    from cluster.config import RayConfig
    from cluster.plan import Bundle, PlanDoesNotFitError, ResourcePlan, ensure_fits

    small = ResourcePlan((Bundle("rollout", 0.5), Bundle("reward", 0.1)))
    assert ensure_fits(small, RayConfig()).new_nodes == ()
    cfg = RayConfig(placement_timeout_s=3.0, autoscaler_node_types={"gpu-worker": {"CPU": 8.0, "GPU": 1.0}})
    started = time.monotonic()
    with pytest.raises(PlanDoesNotFitError, match=r"not placed within ray.placement_timeout_s=3 s.*autoscaler "
                                                   r"was to add gpu-worker.*Not placeable now: 1 x rollout "
                                                   r"\{CPU 1, GPU 1\}"):
        ensure_fits(ResourcePlan((Bundle("rollout", 1.0, 1.0),)), cfg)
    assert time.monotonic() - started < 30
    assert {pg["state"] for pg in placement_group_table().values()} <= {"REMOVED"}  # nothing left reserved


def test_held_bundles_stay_reserved_for_the_run_and_its_actors_start_inside_them(ray_cluster):
    """``hold``: the rollout and reward bundles stay reserved after the check (the learner's are released for Ray
    Train); an actor given ``placement.options`` runs in its bundle, one beyond the plan (elastic growth) outside."""
    import ray
    from ray.util.placement_group import placement_group_table, remove_placement_group

    from cluster.config import RayConfig
    from cluster.plan import Bundle, ResourcePlan, ensure_fits

    plan = ResourcePlan((Bundle("rollout", 0.1), Bundle("learner", 0.05), Bundle("reward", 0.05)))
    placement = ensure_fits(plan, RayConfig(), hold=("rollout", "reward")).placement
    try:
        assert placement.indices == {"rollout": (0,), "reward": (1,)}
        table = placement_group_table(placement.group)
        assert table["state"] == "CREATED" and list(table["bundles"].values()) == [{"CPU": 0.1}, {"CPU": 0.05}]

        @ray.remote
        class Where:
            def group(self):
                return ray.get_runtime_context().get_placement_group_id()

        inside = Where.options(num_cpus=0.1, **placement.options("rollout", 0)).remote()
        beyond = Where.options(num_cpus=0.05, **placement.options("rollout", 1)).remote()
        assert ray.get(inside.group.remote()) == placement.group.id.hex()
        assert ray.get(beyond.group.remote()) is None
        for actor in (inside, beyond):
            ray.kill(actor)
    finally:
        remove_placement_group(placement.group)


def test_a_rollout_worker_with_no_room_is_not_waited_for(ray_cluster, model_path, rollout_cfg):
    """A replacement or added rollout worker that Ray cannot place (here: a GPU on a CPU-only cluster; on a real one,
    a node taken away) is given up at the timeout with the resources named, and nothing of it is left waiting."""
    from dataclasses import replace

    from actors.remote import start_rollout_worker
    from cluster.plan import PlanDoesNotFitError

    cfg = replace(rollout_cfg, num_gpus_per_worker=1.0, num_cpus_per_worker=0.5)
    free = ray_cluster.available_resources().get("CPU", 0.0)
    started = time.monotonic()
    with pytest.raises(PlanDoesNotFitError, match=r"rollout worker 3 \{CPU 0.5, GPU 1\} was not placed within "
                                                   r"ray.placement_timeout_s=2 s.*free per node.*Fix:"):
        start_rollout_worker(model_path, cfg, 3, timeout_s=2.0)
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10  # nothing holds resources afterwards (the probe was cancelled, no actor made)
    while ray_cluster.available_resources().get("CPU", 0.0) < free and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_cluster.available_resources().get("CPU", 0.0) >= free
