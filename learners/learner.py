"""One learner worker: the policy (base + LoRA), its optimizer, and the PPO-family update on a scored batch.

Every worker receives the whole scored batch (small: token ids and floats), computes the sequence advantages on
all of it (GRPO/RLOO groups may straddle shards), takes its shard ``rank::world_size``, and normalises every loss by
the *global* number of loss tokens, so the summed gradients of the shards equal the full-batch gradient exactly,
whatever the shards' token counts. Gradients are summed with ``all_reduce`` (gloo on CPU, NCCL on GPU).
The reference policy is the same model with the adapter switched off: no second copy of the weights.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from actors.adapters import read_adapter_dir
from actors.trajectory import Trajectory
from learners.advantages import broadcast_to_tokens, grpo_advantages, rloo_advantages
from learners.collate import Batch, collate, split
from learners.config import LearnerConfig
from learners.losses import aggregate, kl_penalty, masked_sum, ppo_policy_loss
from learners.policy import add_lora, load_base, save_adapter, token_logprobs


class Learner:
    def __init__(self, cfg: LearnerConfig, model_path: str, *, temperature: float, rank: int = 0,
                 world_size: int = 1):
        from transformers import AutoTokenizer

        self.cfg, self.temperature, self.rank, self.world_size = cfg, temperature, rank, world_size
        if not cfg.use_gpu:  # Ray sets OMP_NUM_THREADS from the fractional CPU reservation (1); undo that
            torch.set_num_threads(cfg.cpu_threads or max(1, (os.cpu_count() or 1) // world_size))
        torch.manual_seed(cfg.seed)  # same adapter initialisation on every rank
        self.model = add_lora(load_base(model_path, cfg.dtype), cfg.lora)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay)
        self.pad_id = AutoTokenizer.from_pretrained(model_path).pad_token_id or 0
        self.step = 0

    # ALGO LOGIC ---------------------------------------------------------------------------------------------
    def advantages(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        scores = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)
        groups = [t.group_id for t in trajectories]
        if self.cfg.algo == "grpo":
            return grpo_advantages(scores, groups)
        return rloo_advantages(scores, groups)

    def update(self, trajectories: Sequence[Trajectory]) -> dict:
        """One optimisation step on the full scored batch (this rank trains on its shard); returns metrics."""
        started = time.perf_counter()
        cfg = self.cfg
        advantages = self.advantages(trajectories)
        mine = list(range(self.rank, len(trajectories), self.world_size))
        num_tokens = float(sum(t.num_sampled for t in trajectories))  # global: every rank sees the full batch
        if not mine or num_tokens == 0:
            raise ValueError(f"rank {self.rank} got no trainable tokens: batch of {len(trajectories)} episodes with "
                             f"{num_tokens:g} sampled tokens. Fix: more episodes per step than learner workers")
        shard = collate([trajectories[i] for i in mine], self.pad_id)
        micro = split(shard, cfg.micro_batch_size)
        adv_micro = torch.split(advantages[mine], cfg.micro_batch_size)
        old, ref = self._frozen_logprobs(micro)

        stats = torch.zeros(8, dtype=torch.float64)  # sums over this rank's tokens, all-reduced below
        for _ in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for mb, adv, old_lp, ref_lp in zip(micro, adv_micro, old, ref):
                stats += self._loss_and_backward(mb, adv, old_lp, ref_lp, num_tokens)
            grad_norm, skipped = self._step_optimizer()
        stats = self._all_reduce(stats)
        self.step += 1
        tokens = stats[0].item()
        return {
            "loss": stats[1].item(), "kl": stats[2].item() / tokens, "entropy": stats[3].item() / tokens,
            "clip_frac": stats[4].item() / tokens, "logprob_mismatch": stats[5].item() / tokens,
            "logprob_mismatch_max": stats[6].item(), "grad_norm": grad_norm, "skipped_update": float(skipped),
            "lr": self.optimizer.param_groups[0]["lr"], "learn_tokens": tokens,
            "advantage_abs_mean": advantages.abs().mean().item(), "learn_s": time.perf_counter() - started,
        }

    def _frozen_logprobs(self, micro: list[Batch]) -> tuple[list[torch.Tensor | None], list[torch.Tensor]]:
        """Logprobs before the update (PPO's old policy) and under the reference (adapter off).

        With one epoch the old policy is the current one: its logprobs come free from the training forward
        (``None`` here), saving a full forward pass per step.
        """
        old, ref = [], []
        with torch.no_grad():
            for mb in micro:
                where = mb.loss_mask > 0
                old.append(None if self.cfg.ppo_epochs == 1 else
                           token_logprobs(self.model, mb.input_ids, mb.attention_mask, self.temperature, where=where))
                with self.model.disable_adapter():
                    ref.append(token_logprobs(self.model, mb.input_ids, mb.attention_mask, self.temperature,
                                              where=where))
        return old, ref

    def _loss_and_backward(self, mb: Batch, adv: torch.Tensor, old_lp: torch.Tensor | None, ref_lp: torch.Tensor,
                           num_tokens: float) -> torch.Tensor:
        cfg, mask = self.cfg, mb.loss_mask
        self.model.train()
        logprobs, entropy = token_logprobs(self.model, mb.input_ids, mb.attention_mask, self.temperature,
                                           where=mask > 0, return_entropy=True)
        if old_lp is None:
            old_lp = logprobs.detach()
        policy = ppo_policy_loss(logprobs, old_lp, broadcast_to_tokens(adv, mask), mask, clip_eps=cfg.clip_eps,
                                 clip_eps_high=cfg.clip_eps_high, dual_clip_c=cfg.dual_clip_c, agg=cfg.loss_agg,
                                 num_tokens=num_tokens, num_seqs=None)
        kl = kl_penalty(logprobs, ref_lp, kind=cfg.kl_estimator, mask=mask)
        loss = (policy.loss + cfg.kl_coef * aggregate(kl, mask, cfg.loss_agg, num_tokens=num_tokens)
                - cfg.entropy_coef * aggregate(entropy, mask, cfg.loss_agg, num_tokens=num_tokens))
        loss.backward()
        n = mask.sum()
        mismatch = (old_lp - mb.behavior_logprobs).abs() * mask
        return torch.stack([
            n.double(), loss.detach().double(), masked_sum(kl.detach(), mask).double(),
            masked_sum(entropy.detach(), mask).double(), (policy.clip_frac * n).double(),
            mismatch.sum().double(), mismatch.max().double(), torch.zeros((), dtype=torch.float64),
        ])

    def _step_optimizer(self) -> tuple[float, bool]:
        """Sum gradients over ranks, clip, step; a non-finite gradient skips the update and keeps the weights."""
        if self.world_size > 1:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return grad_norm, True
        warm = min(1.0, (self.step + 1) / max(1, self.cfg.warmup_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * warm
        self.optimizer.step()
        return grad_norm, False

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return stats
        summed = stats.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        peak = stats[6:7].clone()
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        summed[6] = peak[0]
        return summed

    # PLUMBING -----------------------------------------------------------------------------------------------
    def adapter_files(self) -> dict[str, bytes]:
        """The adapter in PEFT format as bytes, for the object store (rank 0 sends it to the rollout workers)."""
        with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
            save_adapter(self.model, tmp)
            return read_adapter_dir(tmp)

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """Per-token logprobs (temperature 1) of a fixed sequence: compared with vLLM's after a sync."""
        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        with torch.no_grad():
            return token_logprobs(self.model, ids, torch.ones_like(ids), 1.0)[0].tolist()

    def state(self) -> dict:
        """Everything a resume needs from the learner: adapter weights, optimizer, step, RNG."""
        buf = io.BytesIO()
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step,
                    "torch_rng": torch.get_rng_state()}, buf)
        return {"adapter": self.adapter_files(), "learner.pt": buf.getvalue()}

    def load_state(self, state: dict) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load as load_safetensors

        set_peft_model_state_dict(self.model, load_safetensors(state["adapter"]["adapter_model.safetensors"]))
        extra = torch.load(io.BytesIO(state["learner.pt"]), weights_only=False)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.step = extra["step"]
        torch.set_rng_state(extra["torch_rng"])
