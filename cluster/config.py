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

    def validate(self) -> list[str]:
        if self.num_cpus is not None and self.num_cpus <= 0:
            return [f"num_cpus: must be > 0, got {self.num_cpus}. Fix: remove it to use the machine's cores"]
        return []
