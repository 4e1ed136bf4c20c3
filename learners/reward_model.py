"""A Bradley–Terry reward model: the base causal LM with a LoRA adapter and a scalar head, trained on preferences.

The reward of a text is ``Linear(hidden, 1)`` of the decoder's final hidden state (after the final norm) at the
last non-pad token: the one position that has read the whole episode. Training minimises the Bradley–Terry loss
``-log sigmoid(r(chosen) - r(rejected))`` (``bt_loss``), so only differences between rewards of one prompt are
learned; a reward's absolute level means nothing.

Texts longer than ``max_tokens`` keep their *last* tokens: episodes differ at the end (the calls, results and the
answer), while the start is the system prompt with the tool schemas, the same for every episode of an env.

``lora_layers`` puts adapters on the top layers only. The layers below then carry no trainable parameter, so
autograd keeps no activations for them and the backward pass stops at the lowest adapted layer: on SmolLM2-135M
(30 layers) the top 8 train ~5x faster per token than all 30 on 2 CPU cores.

On disk (``save`` / ``load``): the PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``),
``score_head.safetensors`` beside it (not in ``modules_to_save``, as the value head: other PEFT tools load the
adapter unchanged) and ``reward_model.json`` (base model spec, max_tokens, dtype).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from jobs.config_loader import doc
from learners.optim import clipped_step, warmup_schedule
from learners.policy import LoraSettings, decoder_hidden, load_adapter, load_base, save_adapter

__all__ = ["RewardModelConfig", "RewardModel", "bt_loss", "train_reward_model", "HEAD_FILE", "META_FILE"]

HEAD_FILE = "score_head.safetensors"
META_FILE = "reward_model.json"


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean Bradley–Terry negative log-likelihood ``-log sigmoid(r_chosen - r_rejected)`` over the pairs.

    >>> round(bt_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)  # no preference yet: log 2
    0.6931
    >>> round(bt_loss(torch.tensor([2.0]), torch.tensor([0.0])).item(), 4)  # log(1 + e^-2)
    0.1269
    >>> round(bt_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0])).item(), 4)  # mean of 1.3133 and 0.1269
    0.7201
    """
    return -nn.functional.logsigmoid(r_chosen.float() - r_rejected.float()).mean()


@dataclass(frozen=True)
class RewardModelConfig:
    lora: LoraSettings = doc(LoraSettings(rank=8, alpha=16.0), "the adapter on the base; rank 8 is plenty for "
                             "a scalar judgement (SFT uses 16 to learn a whole output format)")
    lora_layers: int | None = doc(8, "adapters on the top N decoder layers only; None = all. The backward pass "
                                     "stops at the lowest adapted layer: top 8 of SmolLM2's 30 is ~5x faster")
    max_tokens: int = doc(1024, "tokens per scored text; longer ones keep their last max_tokens tokens (the "
                                "episode's end; the start is the env's shared system prompt)")
    dtype: Literal["float32", "bfloat16", "float16"] = doc("bfloat16", "base weights dtype; the adapter, head and "
                                                           "optimizer stay fp32. bf16 is ~1.4x faster on CPU here")
    lr: float = doc(1.0e-3, "AdamW learning rate of the adapter and the head; LoRA on a small model, few steps")
    epochs: int = doc(2, "passes over the training pairs")
    batch_size: int = doc(8, "pairs per optimizer step (2x as many texts in the forward pass)")
    warmup_steps: int = doc(2, "linear warm-up steps, then cosine decay to 0 at the end")
    weight_decay: float = doc(0.0, "AdamW weight decay")
    grad_clip: float = doc(1.0, "max global grad norm; <= 0 turns clipping off")
    seed: int = doc(0, "seeds the adapter init and the batch order")
    device: str = doc("auto", "torch device: auto = cuda when available, else cpu")

    def validate(self) -> list[str]:
        problems = [f"lora.{p}" for p in self.lora.validate()]
        for name in ("epochs", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}. Fix: set a positive integer")
        if self.lora_layers is not None and self.lora_layers < 1:
            problems.append(f"lora_layers: must be >= 1 or null, got {self.lora_layers}. Fix: use 8, or null for all")
        if not self.lr > 0:
            problems.append(f"lr: must be > 0, got {self.lr}. Fix: use e.g. 1.0e-3")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            problems.append("warmup_steps and weight_decay: must be >= 0. Fix: use 2 and 0.0")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            problems.append(f"device: unknown {self.device!r}. Fix: use auto, cpu or cuda[:N]")
        return problems


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


class RewardModel(nn.Module):
    """``backbone`` (a PeftModel over the base causal LM) + ``head`` (hidden -> 1); ``score`` texts in batches."""

    def __init__(self, backbone, head: nn.Linear, tokenizer, *, base_model: str, max_tokens: int, dtype: str):
        super().__init__()
        self.backbone, self.head, self.tokenizer = backbone, head, tokenizer
        self.base_model, self.max_tokens, self.dtype = base_model, max_tokens, dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ---- building and loading ----

    @classmethod
    def build(cls, base_model: str, cfg: RewardModelConfig) -> RewardModel:
        """A fresh model: LoRA B = 0 and a zero head, so every text starts at reward 0 (every pair a tie)."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        from cluster.model import resolve_model

        path = resolve_model(base_model)
        torch.manual_seed(cfg.seed)
        base = load_base(path, cfg.dtype)
        layers = base.config.num_hidden_layers
        top = None if cfg.lora_layers is None else list(range(max(0, layers - cfg.lora_layers), layers))
        lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=list(cfg.lora.target_modules), layers_to_transform=top, bias="none")
        head = nn.Linear(base.config.hidden_size, 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return cls(get_peft_model(base, lora), head, AutoTokenizer.from_pretrained(str(path)), base_model=base_model,
                   max_tokens=cfg.max_tokens, dtype=cfg.dtype).to(_device(cfg.device))

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = save_adapter(self.backbone, out_dir)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(out / HEAD_FILE))
        meta = {"base_model": self.base_model, "max_tokens": self.max_tokens, "dtype": self.dtype,
                "hidden_size": self.head.in_features, "loss": "bradley-terry", "pooling": "last non-pad token"}
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> RewardModel:
        """A saved model, frozen and in eval mode, on ``device``."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from cluster.model import resolve_model

        path = Path(path)
        missing = [n for n in (META_FILE, HEAD_FILE, "adapter_config.json") if not (path / n).exists()]
        if missing:
            raise FileNotFoundError(f"{path} is not a reward model directory (missing {', '.join(missing)}). Fix: "
                                    "pass the model/ directory that `python -m jobs.train_reward_model` wrote")
        meta = json.loads((path / META_FILE).read_text())
        base_path = resolve_model(meta["base_model"])
        backbone = load_adapter(load_base(base_path, meta["dtype"]), path, trainable=False)
        state = load_file(str(path / HEAD_FILE))
        hidden = backbone.get_base_model().config.hidden_size
        if state["weight"].shape != (1, hidden):
            raise ValueError(f"{path / HEAD_FILE} has shape {tuple(state['weight'].shape)}, the base model "
                             f"{meta['base_model']} needs (1, {hidden}): it was trained on another base. Fix: load it "
                             "with the base model it was trained on")
        head = nn.Linear(hidden, 1)
        head.load_state_dict(state)
        model = cls(backbone, head, AutoTokenizer.from_pretrained(str(base_path)), base_model=meta["base_model"],
                    max_tokens=int(meta["max_tokens"]), dtype=meta["dtype"])
        return model.to(_device(device)).eval().requires_grad_(False)

    # ---- scoring ----

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, whole; no special tokens added (the rendering has its own)."""
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as the model reads it: the last max_tokens."""
        return [ids[-self.max_tokens:] for ids in self.token_ids(texts)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                share_prefix: bool = True) -> torch.Tensor:
        """[B, T] right-padded ids and mask -> [B] float32 rewards, read at each row's last real token.

        ``share_prefix`` runs a prefix common to all rows once (``learners.policy.decoder_hidden``): the same values
        in fp32, but in bf16 it rounds differently from the plain pass (rewards moved by up to ~1 on a spread of
        ~10, measured on 420-token calculator episodes), so scoring turns it off: a reward must not depend on
        which other texts share its batch."""
        decoder = self.backbone.get_base_model().get_decoder()
        plain = None if share_prefix else input_ids.shape[1] + 1
        hidden = decoder_hidden(decoder, input_ids, attention_mask, min_shared=plain)
        last = attention_mask.long().sum(1) - 1
        return self.head(hidden[torch.arange(len(last), device=last.device), last].float()).squeeze(-1)

    def collate(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        device = self.head.weight.device
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def score(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """The reward of each text, in order; batched by similar length so little compute goes to padding. A text's
        reward does not depend on the rest of its batch (padding is masked, no shared-prefix pass)."""
        was_training = self.training
        self.eval()
        ids = self.encode(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, r in zip(chunk, self(*self.collate([ids[i] for i in chunk]), share_prefix=False).tolist()):
                out[i] = r
        self.train(was_training)
        return out


def train_reward_model(model: RewardModel, pairs: Sequence, cfg: RewardModelConfig, *,
                       log: Callable[[str], None] = print) -> dict:
    """Fit ``model`` to ``pairs`` (anything with ``prompt``, ``chosen``, ``rejected``: ``rewards.preferences``)
    with the Bradley–Terry loss; returns per-step metrics and totals. The model is left in eval mode."""
    if not pairs:
        raise ValueError("no training pairs. Fix: give more groups with different rewards, or loosen "
                         "length_tolerance")
    started = time.perf_counter()
    whole = model.token_ids([p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs])
    truncated = sum(len(ids) > model.max_tokens for ids in whole)
    whole = [ids[-model.max_tokens:] for ids in whole]
    chosen, rejected = whole[:len(pairs)], whole[len(pairs):]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = per_epoch * cfg.epochs

    scheduler = warmup_schedule(optimizer, cfg.warmup_steps, total)
    order_rng = random.Random(f"reward-model-order:{cfg.seed}")
    steps, tokens = [], 0
    model.train()

    # ---- ALGO: Bradley–Terry on (chosen, rejected) rewards from one forward pass, AdamW, warm-up + cosine ----
    for epoch in range(cfg.epochs):
        order = list(range(len(pairs)))
        order_rng.shuffle(order)
        for b in range(per_epoch):
            t0 = time.perf_counter()
            batch = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            ids, mask = model.collate([chosen[i] for i in batch] + [rejected[i] for i in batch])
            rewards = model(ids, mask)
            r_chosen, r_rejected = rewards[:len(batch)], rewards[len(batch):]
            loss = bt_loss(r_chosen, r_rejected)
            loss.backward()
            norm, lr = clipped_step(optimizer, scheduler, params, cfg.grad_clip)
            real = int(mask.sum())
            tokens += real
            row = {"step": len(steps), "epoch": epoch, "loss": loss.item(), "grad_norm": norm, "lr": lr,
                   "accuracy": (r_chosen > r_rejected).float().mean().item(), "tokens": real,
                   "time_s": time.perf_counter() - t0}
            steps.append(row)
            log(f"step {row['step']:>3}/{total}  loss {row['loss']:.4f}  acc {row['accuracy']:.2f}  "
                f"grad_norm {row['grad_norm']:.3f}  lr {lr:.2e}  {real / row['time_s']:.0f} tok/s")
    model.eval()
    train_s = sum(r["time_s"] for r in steps)
    return {"steps": steps, "pairs": len(pairs), "truncated_texts": truncated, "tokens": tokens,
            "first_loss": steps[0]["loss"], "final_loss": steps[-1]["loss"], "train_s": train_s,
            "wall_s": time.perf_counter() - started, "tokens_per_s": tokens / train_s if train_s else 0.0,
            "trainable_params": sum(p.numel() for p in params)}
