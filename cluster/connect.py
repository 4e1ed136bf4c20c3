"""Joining a Ray cluster, and checking that a run's actors fit before any of them starts.

Under ``ray job submit`` RAY_ADDRESS points at the cluster; otherwise a local one starts in-process. A plan that
cannot be placed must fail at once with the missing resource named: Ray would otherwise wait forever for it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping

from cluster.config import RayConfig


class PlanDoesNotFitError(RuntimeError):
    """The cluster lacks a resource the run needs; the message names it and the fix."""


def connect(cfg: RayConfig) -> dict:
    """``ray.init`` once; returns the cluster's total resources."""
    import ray

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # "local" starts a fresh cluster; a bare ray.init() would try to join whatever a stale
            # /tmp/ray/ray_current_cluster names, e.g. a cluster that `ray start` left behind and is gone.
            ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True)
    return ray.cluster_resources()


def check_plan(demands: Mapping[str, Mapping[str, float]], available: Mapping[str, float]) -> None:
    """``demands``: actor group -> resources it needs in total; raises if the sum exceeds the cluster."""
    total: Counter = Counter()
    for need in demands.values():
        total.update({k: v for k, v in need.items() if v})
    missing = {k: (v, available.get(k, 0.0)) for k, v in total.items() if v > available.get(k, 0.0) + 1e-9}
    if missing:
        lines = [f"{k}: need {need:g}, cluster has {have:g}" for k, (need, have) in sorted(missing.items())]
        groups = ", ".join(f"{g}={dict(d)}" for g, d in demands.items())
        raise PlanDoesNotFitError(
            "the run's actors cannot be placed on this cluster: " + "; ".join(lines) + f" (plan: {groups}). "
            "Fix: lower the per-actor num_cpus/num_gpus or the number of workers, or start the cluster with more "
            "resources (e.g. ray.num_cpus=4 runs a local cluster with more logical CPUs than cores)."
        )
