"""Trajectories -> padded tensors on the next-token grid the learner computes logprobs on.

Position ``t`` of every [B, T-1] tensor is the prediction of token ``t + 1`` of ``prompt_ids + completion_ids``:
``loss_mask[b, t] = 1`` exactly where that token was sampled by the policy, and ``behavior_logprobs`` sit there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from actors.trajectory import Trajectory


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long, right-padded
    attention_mask: torch.Tensor  # [B, T] long
    loss_mask: torch.Tensor  # [B, T-1] float: 1 = a sampled token that enters the loss
    behavior_logprobs: torch.Tensor  # [B, T-1] float, 0 where loss_mask is 0
    turn_ends: list[list[tuple[int, float]]]  # per row: (exclusive end on the [T-1] grid, turn reward)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum().item())


def collate(trajectories: Sequence[Trajectory], pad_id: int) -> Batch:
    if not trajectories:
        raise ValueError("collate needs at least one trajectory")
    width = max(t.num_tokens for t in trajectories)
    n = len(trajectories)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1), dtype=torch.float32)
    behavior = torch.zeros((n, width - 1), dtype=torch.float32)
    turn_ends = []
    for i, t in enumerate(trajectories):
        seq = t.prompt_ids + t.completion_ids
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[i, : len(seq)] = 1
        offset = len(t.prompt_ids) - 1  # completion token j is predicted at grid position offset + j
        row_mask = torch.tensor(t.loss_mask, dtype=torch.float32)
        mask[i, offset: offset + len(t.loss_mask)] = row_mask
        positions = torch.nonzero(mask[i] > 0).squeeze(-1)
        behavior[i, positions] = torch.tensor(t.behavior_logprobs, dtype=torch.float32)
        turn_ends.append([(offset + turn.end, turn.reward) for turn in t.turns if turn.end > turn.start])
    return Batch(ids, attn, mask, behavior, turn_ends)


def split(batch: Batch, size: int) -> list[Batch]:
    """Micro-batches of at most ``size`` rows, trimmed to their own longest row (less padding, less compute)."""
    out = []
    for start in range(0, len(batch), size):
        rows = slice(start, start + size)
        width = int(batch.attention_mask[rows].sum(-1).max().item())
        out.append(Batch(batch.input_ids[rows, :width], batch.attention_mask[rows, :width],
                         batch.loss_mask[rows, : width - 1], batch.behavior_logprobs[rows, : width - 1],
                         batch.turn_ends[rows]))
    return out
