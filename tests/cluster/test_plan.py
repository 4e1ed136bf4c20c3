"""The resource plan and its check against fake ``ray.nodes()`` lists: pure functions, no Ray."""

from __future__ import annotations

import pytest

from actors.config import RolloutConfig
from cluster.config import RayConfig
from cluster.plan import (
    Bundle,
    NodeType,
    PlanDoesNotFitError,
    ResourcePlan,
    autoscaler_node_types,
    check_fits,
    plan_for,
)
from jobs.config_loader import ConfigError, load_config, undocumented
from learners.config import LearnerConfig

GIB = 2**30


def node(alive: bool = True, **resources: float) -> dict:
    """One entry of ``ray.nodes()``: only the keys the check reads, plus the noise Ray adds."""
    return {"NodeID": "n", "Alive": alive, "Resources": {"node:10.0.0.1": 1.0, "object_store_memory": GIB,
                                                         **resources}}


def plan(*bundles: Bundle) -> ResourcePlan:
    return ResourcePlan(tuple(bundles))


def test_plan_for_has_one_bundle_per_actor():
    train = plan_for(RolloutConfig(num_workers=2, num_gpus_per_worker=1.0),
                     LearnerConfig(num_workers=2, use_gpu=True, num_cpus_per_worker=4.0), reward=True)
    assert [b.group for b in train.bundles] == ["rollout", "rollout", "reward", "pool", "learner", "learner"]
    assert train.bundles[0].resources() == {"CPU": 1.0, "GPU": 1.0}
    assert train.bundles[-1].resources() == {"CPU": 4.0, "GPU": 1.0}
    assert train.totals()["GPU"] == 4.0
    assert train.describe().startswith("2 x rollout {CPU 1, GPU 1}, 1 x reward {CPU 0.1}")
    assert plan_for(RolloutConfig()).bundles == (Bundle("rollout", 1.0, 0.0),)  # the CPU default: no GPU asked


def test_default_plan_fits_a_two_core_machine():
    default = plan_for(RolloutConfig(), LearnerConfig(), reward=True)  # jobs.train's defaults
    assert check_fits(default, [node(CPU=2.0, memory=8 * GIB)]).new_nodes == ()


def test_gpu_on_cpu_only_nodes_names_gpu_and_the_fix():
    with pytest.raises(PlanDoesNotFitError) as err:
        check_fits(plan(Bundle("rollout", 1.0, 1.0), Bundle("learner", 0.5)), [node(CPU=2.0)])
    msg = str(err.value)
    assert "GPU: a rollout actor needs 1 GPU on one node; the largest node has 0 (the cluster 0 on 1 node)" in msg
    assert "rollout.num_gpus_per_worker" in msg and "no autoscaler" in msg
    assert "CPU:" not in msg  # only what is missing is named


def test_a_two_gpu_actor_does_not_fit_on_two_one_gpu_nodes():
    nodes = [node(CPU=8.0, GPU=1.0), node(CPU=8.0, GPU=1.0)]
    two_gpus = plan(Bundle("learner", 1.0, 2.0))
    with pytest.raises(PlanDoesNotFitError, match=r"GPU: a learner actor needs 2 GPU on one node; the largest node "
                                                   r"has 1 \(the cluster 2 on 2 nodes\)"):
        check_fits(two_gpus, nodes)
    check_fits(plan(Bundle("learner", 1.0, 1.0), Bundle("learner", 1.0, 1.0)), nodes)  # one per node: fine


def test_fragmentation_fails_the_bin_pack_though_the_totals_fit():
    # 6 CPUs in all and 6 asked, but each 3-CPU node takes only one 2-CPU actor: the third has nowhere to go.
    three = plan(*[Bundle("rollout", 2.0)] * 3)
    with pytest.raises(PlanDoesNotFitError) as err:
        check_fits(three, [node(CPU=3.0), node(CPU=3.0)])
    msg = str(err.value)
    assert "CPU: the plan needs CPU 6 in all, the cluster has CPU 6 (per node: {CPU 3}; {CPU 3})" in msg
    assert "left without a node: 1 x rollout {CPU 2}" in msg and "rollout.num_workers" in msg


def test_totals_over_the_cluster_name_resource_need_and_have():
    with pytest.raises(PlanDoesNotFitError, match=r"CPU: the plan needs CPU 3 in all, the cluster has CPU 2"):
        check_fits(plan(Bundle("rollout", 2.0), Bundle("learner", 1.0)), [node(CPU=2.0)])


def test_dead_nodes_do_not_count():
    with pytest.raises(PlanDoesNotFitError, match="GPU: a rollout actor needs 1 GPU"):
        check_fits(plan(Bundle("rollout", 1.0, 1.0)), [node(CPU=4.0), node(alive=False, CPU=8.0, GPU=8.0)])


def test_resources_split_over_nodes_name_the_combination():
    nodes = [node(CPU=2.0, GPU=1.0), node(CPU=16.0)]
    with pytest.raises(PlanDoesNotFitError, match=r"CPU/GPU: a rollout actor needs \{CPU 8, GPU 1\} on one node; "
                                                   r"no node has all of it"):
        check_fits(plan(Bundle("rollout", 8.0, 1.0)), nodes)


def test_memory_is_checked_when_a_bundle_reserves_it():
    with pytest.raises(PlanDoesNotFitError, match=r"memory: a judge actor needs 32 GiB memory on one node; the "
                                                   r"largest node has 16 GiB"):
        check_fits(plan(Bundle("judge", 1.0, memory=32 * GIB)), [node(CPU=4.0, memory=16 * GIB)])


def test_autoscaler_that_could_add_the_gpu_node_passes_the_check():
    gpu_node = NodeType("gpu-worker", {"CPU": 8.0, "GPU": 2.0})
    two_gpu_workers = plan(Bundle("rollout", 1.0, 1.0), Bundle("rollout", 1.0, 1.0), Bundle("learner", 0.5))
    fit = check_fits(two_gpu_workers, [node(CPU=2.0)], [gpu_node])
    assert fit.new_nodes == ("gpu-worker",)  # both workers on one new 2-GPU node; the learner on the head
    assert check_fits(two_gpu_workers, [node(CPU=2.0)], [NodeType("g1", {"CPU": 8.0, "GPU": 1.0})]).new_nodes == (
        "g1", "g1")
    capped = NodeType("gpu-worker", {"CPU": 1.0, "GPU": 1.0}, max_new=1)
    with pytest.raises(PlanDoesNotFitError, match=r"GPU: the plan needs GPU 2 in all, the cluster has GPU 0 "
                                                   r"\(per node: \{GPU 0\}\) and the autoscaler can add GPU 1;"):
        check_fits(two_gpu_workers, [node(CPU=2.0)], [capped])


def test_autoscaler_without_the_resource_still_fails_naming_it():
    with pytest.raises(PlanDoesNotFitError, match=r"(?s)GPU: .*and no autoscaler node type has it.*autoscaler node "
                                                   r"types: cpu-worker \{CPU 16\}"):
        check_fits(plan(Bundle("rollout", 1.0, 1.0)), [node(CPU=2.0)], [NodeType("cpu-worker", {"CPU": 16.0})])


def test_every_problem_is_reported_at_once():
    with pytest.raises(PlanDoesNotFitError) as err:
        check_fits(plan(Bundle("rollout", 1.0, 1.0), Bundle("learner", 4.0)), [node(CPU=2.0)])
    assert "GPU: a rollout actor" in str(err.value) and "CPU: a learner actor needs 4 CPU" in str(err.value)
    assert "learner.num_cpus_per_worker" in str(err.value) and "ray.num_cpus=4" in str(err.value)


def test_autoscaler_node_types_come_from_the_config():
    cfg = RayConfig(autoscaler_node_types={"gpu": {"CPU": 8.0, "GPU": 1.0}})
    assert autoscaler_node_types(cfg) == [NodeType("gpu", {"CPU": 8.0, "GPU": 1.0})]


def test_ray_config_fields_are_documented_and_validated(tmp_path):
    assert undocumented(RayConfig) == []
    path = tmp_path / "ray.yaml"
    path.write_text("placement_timeout_s: 0\nautoscaler_node_types: {gpu: {GPU: -1}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(RayConfig, path)
    assert "placement_timeout_s: must be > 0" in str(err.value)
    assert "autoscaler_node_types.gpu: needs resources >= 0" in str(err.value)
    path.write_text("autoscaler_node_types: {gpu: {CPU: 8, GPU: 1}}\n")
    assert load_config(RayConfig, path).autoscaler_node_types == {"gpu": {"CPU": 8.0, "GPU": 1.0}}
