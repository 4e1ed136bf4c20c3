"""The run config: one frozen dataclass per package, composed here, loaded from one YAML file + overrides."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from actors.config import RolloutConfig
from cluster.config import ModelConfig, RayConfig
from envs.config import TaskConfig
from jobs.config_loader import doc, save_config


@dataclass(frozen=True)
class RunSection:
    name: str = doc("calculator", "run name; outputs go to <storage>/<name>-<UTC timestamp>")
    storage: str = doc("runs", "where run outputs and checkpoints go: a local or shared path")
    run_dir: str | None = doc(None, "exact run directory (e.g. to resume); None = a fresh timestamped one")

    def validate(self) -> list[str]:
        if "://" in self.storage:
            return [f"storage: {self.storage!r} is a URI; this version writes to paths only. Fix: mount the "
                    "bucket (e.g. a shared volume) and give its path"]
        return []


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = doc(RunSection(), "run name and output location")
    model: ModelConfig = doc(ModelConfig(), "the policy's base model")
    ray: RayConfig = doc(RayConfig(), "which Ray cluster to use")
    rollout: RolloutConfig = doc(RolloutConfig(), "rollout workers: engine and episode limits")
    tasks: TaskConfig = doc(TaskConfig(), "the tasks to play")


def make_run_dir(cfg: RunConfig) -> Path:
    """Create the run directory and save the resolved config in it (what actually ran, overrides included)."""
    if cfg.run.run_dir:
        path = Path(cfg.run.run_dir)
    else:
        path = Path(cfg.run.storage) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / "config.yaml")
    return path.resolve()
