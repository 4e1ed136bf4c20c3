"""Joining a Ray cluster; ``cluster.plan`` then checks that a run's actors fit before any of them starts.

Under ``ray job submit`` RAY_ADDRESS points at the cluster; otherwise a local one starts in-process.
"""

from __future__ import annotations

import os

from cluster.config import RayConfig
from cluster.plan import PlanDoesNotFitError, ensure_fits

__all__ = ["PlanDoesNotFitError", "connect", "ensure_fits"]  # the plan's check lives in cluster.plan


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
