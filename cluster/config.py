"""Model and Ray-cluster configuration."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config_loader import doc


@dataclass(frozen=True)
class ModelConfig:
    name: str = doc("smollm2-135m", "shipped default, a local HF model directory, or an HF id in the local cache")


@dataclass(frozen=True)
class RayConfig:
    address: str | None = doc(None, "cluster to join; None = RAY_ADDRESS if set (ray job submit), else a local one")
    num_cpus: float | None = doc(None, "logical CPUs of a local cluster; None = the machine's cores")
    placement_timeout_s: float = doc(300.0, "seconds to wait for the run's actors to be placed when the plan fits "
                                            "(nodes the autoscaler adds, resources other jobs hold), then fail "
                                            "naming what is missing; a cloud node takes 2-5 min to join")
    autoscaler_node_types: dict[str, dict[str, float]] = doc({}, "nodes an autoscaler can add, type name -> one "
                                                             "node's resources, e.g. {gpu: {CPU: 8, GPU: 1}}; "
                                                             "empty = the types the cluster's autoscaler reports "
                                                             "(none on a local or `ray start` cluster)")

    def validate(self) -> list[str]:
        problems = []
        if self.num_cpus is not None and self.num_cpus <= 0:
            problems.append(f"num_cpus: must be > 0, got {self.num_cpus}. Fix: remove it to use the machine's cores")
        if self.placement_timeout_s <= 0:
            problems.append(f"placement_timeout_s: must be > 0, got {self.placement_timeout_s}. Fix: use the "
                            "default 300")
        for name, resources in self.autoscaler_node_types.items():
            if not resources or any(v < 0 for v in resources.values()):
                problems.append(f"autoscaler_node_types.{name}: needs resources >= 0, e.g. {{CPU: 8, GPU: 1}}, "
                                f"got {resources}. Fix: list one node's resources")
        return problems
