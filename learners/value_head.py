"""PPO's critic: a linear value head on the policy's final hidden state, sharing the LoRA backbone.

V(s_t) is read at grid position t of the [B, T-1] next-token grid, i.e. from the hidden state of the prefix that
ends at token t, before token t + 1 is sampled: the same positions the logprobs sit on. The head is its own small
file beside the adapter (``value_head.safetensors``), never inside the PEFT adapter, so vLLM and other PEFT tools
load the adapter unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FILENAME = "value_head.safetensors"


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)  # V = 0 at the start: the first advantages are the plain returns
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] hidden states -> [...] float32 values."""
        return self.linear(hidden.float()).squeeze(-1)


def value_head_bytes(head: ValueHead) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in head.state_dict().items()})


def load_value_head_bytes(head: ValueHead, data: bytes) -> None:
    from safetensors.torch import load

    state = load(data)
    expected = head.linear.in_features
    if state["linear.weight"].shape[-1] != expected:
        raise ValueError(f"value head has hidden size {state['linear.weight'].shape[-1]}, the model {expected}: "
                         "the checkpoint is from another base model. Fix: resume with the run's own model")
    head.load_state_dict(state)


def save_value_head(head: ValueHead, directory: str | Path) -> Path:
    path = Path(directory) / FILENAME
    path.write_bytes(value_head_bytes(head))
    return path
