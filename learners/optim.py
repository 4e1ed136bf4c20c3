"""The optimizer plumbing the supervised trainers share (SFT, the reward model): a warm-up + decay schedule and one
clipped optimizer step. The RL learner has its own (learners/learner.py: skipped non-finite updates, metrics)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["lr_factor", "warmup_schedule", "clipped_step"]


def lr_factor(step: int, warmup: int, total: int, schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``.

    >>> [round(lr_factor(s, 1, 5), 3) for s in range(5)]
    [0.5, 1.0, 0.854, 0.5, 0.146]
    >>> lr_factor(3, 1, 5, "constant")
    1.0
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                    schedule: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, schedule))


def clipped_step(optimizer: torch.optim.Optimizer, scheduler, params: Sequence[torch.Tensor],
                 grad_clip: float) -> tuple[float, float]:
    """Clip the gradients (``grad_clip <= 0``: no clipping, the norm is still measured), step the optimizer and the
    schedule, clear the gradients; returns ``(grad_norm, lr used)``."""
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm.item(), lr
