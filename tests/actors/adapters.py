"""Test helper: a random (non-zero) LoRA adapter for SmolLM2, as PEFT would save it."""

from __future__ import annotations

import tempfile

from actors.adapters import read_adapter_dir

LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def random_adapter(model_path: str, *, rank: int = 8, seed: int = 0, scale: float = 0.02) -> dict[str, bytes]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(LLAMA_LINEAR)))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero (a no-op adapter); make it change the policy
                param.normal_(0.0, scale)
    with tempfile.TemporaryDirectory() as tmp:
        peft.save_pretrained(tmp)
        return read_adapter_dir(tmp)
