"""Merged serving's arithmetic: the per-module deltas of a saved PEFT adapter equal what PEFT's own merge adds."""

from __future__ import annotations

import json

import pytest
import torch

from actors.merged_weights import STACKED, lora_deltas
from learners.policy import LoraSettings, add_lora, load_base, save_adapter

pytestmark = pytest.mark.timeout(120)


def test_deltas_equal_peft_merge(model_path, tmp_path):
    torch.manual_seed(0)
    model = add_lora(load_base(model_path), LoraSettings(rank=8, alpha=16.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.01)
    save_adapter(model, tmp_path)
    deltas = lora_deltas(tmp_path)
    base = {k: v.clone() for k, v in load_base(model_path).state_dict().items()}
    merged = model.merge_and_unload().state_dict()
    layers = model.config.num_hidden_layers
    expected = {f"model.layers.{i}.{part}" for i in range(layers) for parts in STACKED.values() for part in parts}
    assert set(deltas) == expected  # every adapted linear layer, placed where vLLM stacks it
    for module, delta in deltas.items():
        torch.testing.assert_close(base[f"{module}.weight"] + delta, merged[f"{module}.weight"], atol=1e-6, rtol=0)


def test_refuses_adapters_it_cannot_merge_exactly(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "use_dora": True}))
    with pytest.raises(ValueError, match="adapter_serving=lora"):
        lora_deltas(tmp_path)
