"""Elastic rollout pool, decided between steps: how many rollout workers the next step should have.

Two sources, checked by rank 0 after every step: a number in ``<run dir>/rollout_workers`` (a person resizing a
running job: ``echo 2 > runs/<run>/rollout_workers``), else ``rollout.max_workers``: one more worker whenever the
cluster has free resources for one (a node the autoscaler added shows up there), up to that ceiling. New workers load
the current adapter version before they take work (``RolloutPool.resize``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from actors.config import RolloutConfig

CONTROL_FILE = "rollout_workers"


def desired_workers(run_dir: Path, current: int, cfg: RolloutConfig, available: Mapping[str, float]) -> int:
    """The pool size for the next step.

    >>> from actors.config import RolloutConfig
    >>> desired_workers(Path("/nonexistent"), 1, RolloutConfig(max_workers=3), {"CPU": 1.5})
    2
    >>> desired_workers(Path("/nonexistent"), 1, RolloutConfig(max_workers=3), {"CPU": 0.5})
    1
    >>> desired_workers(Path("/nonexistent"), 3, RolloutConfig(max_workers=3), {"CPU": 8})
    3
    """
    control = Path(run_dir) / CONTROL_FILE
    if control.exists():
        text = control.read_text().strip()
        try:
            wanted = int(text)
        except ValueError:
            print(f"ignoring {control}: {text!r} is not a number of rollout workers. Fix: write e.g. 2", flush=True)
        else:
            if wanted >= 1:
                return wanted
            print(f"ignoring {control}: {wanted} workers; a pool needs >= 1", flush=True)
    if cfg.max_workers > current and fits_one(cfg, available):
        return current + 1
    return current


def fits_one(cfg: RolloutConfig, available: Mapping[str, float]) -> bool:
    """Is there room in the cluster's free resources for one more rollout worker?"""
    need = {"CPU": cfg.num_cpus_per_worker, "GPU": cfg.num_gpus_per_worker}
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v)
