"""The policy: a frozen base causal LM with a LoRA adapter on every linear layer, and its token logprobs.

SFT and the RL learner share this module. The reference policy is the same model with the adapter switched off
(``with model.disable_adapter():``), so there is never a second copy of the weights (DESIGN.md).

``token_logprobs`` runs the decoder once and the LM head in row chunks: the [B, T, V] fp32 logits of a
49k-vocabulary model are ~0.6 GB for 8 x 400 tokens, and under autograd each chunk would be kept for backward, so
chunks are recomputed in backward (activation checkpointing of the head only). ``where`` restricts the head to the
positions the loss needs (the sampled tokens, ~10% of an episode), which also saves most of the head's compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from jobs.config_loader import doc

__all__ = ["LoraSettings", "LLAMA_LINEAR_MODULES", "load_base", "add_lora", "load_adapter", "save_adapter",
           "token_logprobs", "policy_outputs", "PolicyOutputs", "DTYPES"]

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHARED_PREFIX_MIN = 32  # rows sharing at least this many leading tokens run them once (decoder_hidden)
HEAD_CHUNK_ROWS = 1024  # positions per LM-head chunk: 1024 x 49k vocab x 4 B = 200 MB of fp32 logits at a time


@dataclass(frozen=True)
class LoraSettings:
    rank: int = doc(16, "LoRA rank r; 16 on all linear layers is 4.9 M trainable params on SmolLM2-135M, "
                        "and vLLM's max_lora_rank must be >= it")
    alpha: float = doc(32.0, "LoRA alpha; the update is scaled by alpha / rank (2 here, the common choice)")
    dropout: float = doc(0.0, "dropout on the LoRA input; 0 so training and rollout logprobs agree exactly")
    target_modules: tuple[str, ...] = doc(LLAMA_LINEAR_MODULES, "module names that get an adapter: every linear "
                                          "layer of the llama blocks (attention and MLP)")

    def validate(self) -> list[str]:
        problems = []
        if self.rank < 1:
            problems.append(f"rank: must be >= 1, got {self.rank}. Fix: use e.g. 16")
        if self.alpha <= 0:
            problems.append(f"alpha: must be > 0, got {self.alpha}. Fix: use 2 * rank")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout}. Fix: use 0.0")
        if not self.target_modules:
            problems.append(f"target_modules: empty. Fix: use e.g. {list(LLAMA_LINEAR_MODULES)}")
        return problems


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def load_base(model_path: str | Path, dtype: str = "float32"):
    """The base causal LM from a local safetensors directory, in eval mode with no KV cache by default."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype(dtype))
    model.config.use_cache = False  # learners run full sequences; generate() turns the cache on itself
    return model.eval()


def add_lora(model, settings: LoraSettings):
    """Wrap ``model`` in a fresh PEFT LoRA adapter (B = 0, so it starts equal to the base); the base is frozen.

    The base model is modified in place (PEFT injects the adapter layers into it). Seed torch first for a
    reproducible A initialisation.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_adapter(model, path: str | Path, trainable: bool = False):
    """Load a saved PEFT adapter onto ``model`` (a plain base model); trainable=False also freezes the adapter."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"{path} has no adapter_config.json: not a PEFT adapter directory. Fix: pass the "
                                "directory train_sft / save_adapter wrote")
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


def save_adapter(model, out_dir: str | Path) -> Path:
    """Save only the adapter (``adapter_config.json`` + ``adapter_model.safetensors``), the format vLLM loads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (out / name).exists():
            raise RuntimeError(f"saving the adapter wrote no {name} in {out}")
    return out


def _backbone_and_head(model):
    """The decoder stack and the LM head; through a PeftModel the injected LoRA layers (and disable_adapter) apply."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    decoder = base.get_decoder()
    if head is None or decoder is None:
        raise TypeError(f"{type(base).__name__} has no decoder/LM head pair; token_logprobs needs a causal LM whose "
                        "logits are lm_head(final hidden state) (llama, mistral, qwen2, ...)")
    return decoder, head


def shared_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Length of the prefix every row has in common (real tokens only, no padding in it)."""
    same = (input_ids == input_ids[:1]).all(0) & (attention_mask > 0).all(0)
    return int(same.long().cumprod(0).sum())


def decoder_hidden(decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   min_shared: int | None = None) -> torch.Tensor:
    """Final hidden states [B, T, H]. Rows that share a prefix (the system prompt with the tool schemas is ~80% of
    a calculator episode) run it once: its KV cache is computed for one row and expanded to all, then the rest of
    every row attends to it. Same values and gradients as the plain forward (tested), ~2x less compute here."""
    batch, width = input_ids.shape
    min_shared = SHARED_PREFIX_MIN if min_shared is None else min_shared
    prefix = shared_prefix_len(input_ids, attention_mask) if batch > 1 else 0
    if prefix < min_shared or prefix >= width:
        # Positions from the mask, so left-padded rows get the same positions as unpadded ones.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state
    from transformers import DynamicCache

    cache = DynamicCache()
    shared = decoder(input_ids=input_ids[:1, :prefix], use_cache=True, past_key_values=cache).last_hidden_state
    for layer in cache.layers:  # expand is a view; autograd sums the rows' gradients into the shared prefix
        layer.keys = layer.keys.expand(batch, -1, -1, -1)
        layer.values = layer.values.expand(batch, -1, -1, -1)
    position_ids = prefix + (attention_mask[:, prefix:].long().cumsum(-1) - 1).clamp(min=0)
    rest = decoder(input_ids=input_ids[:, prefix:], attention_mask=attention_mask, position_ids=position_ids,
                   past_key_values=cache, use_cache=True).last_hidden_state
    return torch.cat([shared.expand(batch, -1, -1), rest], dim=1)


def _head_logprobs(head, rows: torch.Tensor, targets: torch.Tensor, temperature: float,
                   with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(rows).float()
    if temperature != 1.0:
        logits = logits / temperature
    norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - norm
    if not with_entropy:
        return logprobs, torch.zeros_like(logprobs)
    entropy = norm - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   temperature: float = 1.0, *, where: torch.Tensor | None = None, return_entropy: bool = False,
                   chunk_rows: int = HEAD_CHUNK_ROWS) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token: ``out[b, t] = log softmax(logits[b, t] / temperature)[ids[b, t + 1]]``.

    input_ids, attention_mask: [B, T] (any padding side: positions come from the mask). Returns float32 [B, T-1]
    (and the entropy of the same distributions, [B, T-1], with ``return_entropy``). ``where`` ([B, T-1] bool)
    computes only those positions; the others are 0. Differentiable when grad is enabled.
    """
    out = policy_outputs(model, input_ids, attention_mask, temperature, where=where, return_entropy=return_entropy,
                         chunk_rows=chunk_rows)
    return (out.logprobs, out.entropy) if return_entropy else out.logprobs


class PolicyOutputs(NamedTuple):
    logprobs: torch.Tensor  # [B, T-1]
    entropy: torch.Tensor | None  # [B, T-1] with return_entropy
    values: torch.Tensor | None  # [B, T-1] with a value head: V of the prefix ending at token t


def policy_outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   temperature: float = 1.0, *, where: torch.Tensor | None = None, return_entropy: bool = False,
                   value_head=None, chunk_rows: int = HEAD_CHUNK_ROWS) -> PolicyOutputs:
    """``token_logprobs`` from one decoder pass, plus the value head's predictions on the same positions (PPO)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be [B, T] with T >= 2, got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    decoder, head = _backbone_and_head(model)
    hidden = decoder_hidden(decoder, input_ids, attention_mask)[:, :-1]
    targets = input_ids[:, 1:]
    if where is None:
        where = torch.ones_like(targets, dtype=torch.bool)
    elif where.shape != targets.shape:
        raise ValueError(f"where must be [B, T-1] = {tuple(targets.shape)}, got {tuple(where.shape)}")
    where = where.bool()
    rows, row_targets = hidden[where], targets[where]
    recompute = torch.is_grad_enabled() and rows.requires_grad
    parts_lp, parts_ent = [], []
    for start in range(0, rows.shape[0], chunk_rows):
        args = (head, rows[start:start + chunk_rows], row_targets[start:start + chunk_rows], temperature,
                return_entropy)
        lp, ent = checkpoint(_head_logprobs, *args, use_reentrant=False) if recompute else _head_logprobs(*args)
        parts_lp.append(lp)
        parts_ent.append(ent)
    def on_grid(flat: list[torch.Tensor]) -> torch.Tensor:
        values = torch.cat(flat) if flat else hidden.new_zeros(0, dtype=torch.float32)
        return torch.zeros(targets.shape, dtype=torch.float32, device=input_ids.device).masked_scatter(where, values)

    return PolicyOutputs(on_grid(parts_lp), on_grid(parts_ent) if return_entropy else None,
                         on_grid([value_head(rows)]) if value_head is not None else None)
