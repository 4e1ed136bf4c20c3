"""One learner worker: the policy (base + LoRA, + a value head for PPO), its optimizer, and the PPO-family update.

Every worker receives the whole scored batch (small: token ids and floats), computes the sequence advantages on
all of it (GRPO/RLOO groups may straddle shards), takes its shard ``rank::world_size``, and normalises every loss by
the *global* number of loss tokens, so the summed gradients of the shards equal the full-batch gradient exactly,
whatever the shards' token counts. Gradients are summed with ``all_reduce`` (gloo on CPU, NCCL on GPU).
The reference policy is the same model with the adapter switched off: no second copy of the weights.

PPO (``algo: ppo``) adds a value head on the shared backbone: per-token rewards and GAE on each rank's rows (GAE
needs nothing across rows), then the advantages are whitened with moments summed over all ranks, so the 1-rank and
M-rank updates still agree. PPO's per-token rewards include the process rewards (``Turn.reward``); GRPO/RLOO use
them only with ``process_reward_mode: add`` or ``turn`` (normalised over the full batch's groups, then per token:
docs/training.md).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from actors.adapters import read_adapter_dir
from actors.trajectory import Trajectory
from learners.advantages import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    groups_with_contrast,
    normalize_step_rewards,
    rloo_advantages,
    steps_to_go,
    token_rewards,
    turn_local,
)
from learners.collate import Batch, collate, split
from learners.config import LearnerConfig
from learners.losses import (
    aggregate,
    importance_weights,
    keep_masked,
    kl_penalty,
    masked_sum,
    ppo_policy_loss,
    value_loss,
)
from learners.policy import add_lora, load_base, policy_outputs, save_adapter, token_logprobs
from learners.value_head import FILENAME as VALUE_HEAD_FILE
from learners.value_head import ValueHead, load_value_head_bytes, value_head_bytes


class Frozen(NamedTuple):
    """A micro-batch's tensors from before the update: old-policy logprobs (None = take them from the training
    forward), reference logprobs, old values (PPO)."""

    old: torch.Tensor | None
    ref: torch.Tensor
    values: torch.Tensor | None


class Learner:
    def __init__(self, cfg: LearnerConfig, model_path: str, *, temperature: float, rank: int = 0,
                 world_size: int = 1):
        from transformers import AutoTokenizer

        self.cfg, self.temperature, self.rank, self.world_size = cfg, temperature, rank, world_size
        if not cfg.use_gpu:  # Ray sets OMP_NUM_THREADS from the fractional CPU reservation (1); undo that
            torch.set_num_threads(cfg.cpu_threads or max(1, (os.cpu_count() or 1) // world_size))
        torch.manual_seed(cfg.seed)  # same adapter initialisation on every rank
        self.model = add_lora(load_base(model_path, cfg.dtype), cfg.lora)
        self.value_head = ValueHead(self.model.config.hidden_size) if cfg.algo == "ppo" else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            self.params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay)
        self.pad_id = AutoTokenizer.from_pretrained(model_path).pad_token_id or 0
        self.step = 0

    # ALGO LOGIC ---------------------------------------------------------------------------------------------
    def advantages(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        """Sequence advantages (GRPO/RLOO). For PPO, whose advantages are per token (GAE), the centred reward:
        only the sync probe uses it there, to pick the episode the update pushes hardest."""
        scores = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)
        groups = [t.group_id for t in trajectories]
        if self.cfg.algo == "grpo":
            return grpo_advantages(scores, groups, normalize_std=self.cfg.normalize_std) * self.kept(trajectories)
        if self.cfg.algo == "rloo":
            return rloo_advantages(scores, groups) * self.kept(trajectories)
        return scores - scores.mean()

    def kept(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        """[N] 1.0 for an episode whose advantages count, 0.0 for one in a group that
        ``learner.uniform_outcome_groups: drop`` drops (every outcome equal: ``groups_with_contrast``)."""
        if self.cfg.uniform_outcome_groups == "keep":
            return torch.ones(len(trajectories))
        outcomes = [(t.reward_breakdown or {}).get("outcome", t.reward) for t in trajectories]
        return groups_with_contrast(outcomes, [t.group_id for t in trajectories])

    def update(self, trajectories: Sequence[Trajectory]) -> dict:
        """One optimisation step on the full scored batch (this rank trains on its shard); returns metrics."""
        started = time.perf_counter()
        cfg = self.cfg
        mine = list(range(self.rank, len(trajectories), self.world_size))
        num_tokens = float(sum(t.num_sampled for t in trajectories))  # global: every rank sees the full batch
        if not mine or num_tokens == 0:
            raise ValueError(f"rank {self.rank} got no trainable tokens: batch of {len(trajectories)} episodes with "
                             f"{num_tokens:g} sampled tokens. Fix: more episodes per step than learner workers")
        micro = split(collate([trajectories[i] for i in mine], self.pad_id), cfg.micro_batch_size)
        frozen = self._frozen_outputs(micro)
        kept = self.kept(trajectories)
        if cfg.algo == "ppo":
            rewards = torch.split(torch.tensor([trajectories[i].reward for i in mine]), cfg.micro_batch_size)
            advantages, returns = self._gae_targets(micro, frozen, rewards)
        else:
            seq_adv = torch.split(self.advantages(trajectories)[mine], cfg.micro_batch_size)
            advantages = [broadcast_to_tokens(a, mb.loss_mask) for a, mb in zip(seq_adv, micro)]
            if cfg.process_reward_mode != "none":
                process = self._process_advantages(trajectories, mine, micro, kept)
                advantages = [a + cfg.process_reward_coef * p for a, p in zip(advantages, process, strict=True)]
            returns = [None] * len(micro)

        stats = torch.zeros(10, dtype=torch.float64)  # sums over this rank's tokens, all-reduced below
        for _ in range(cfg.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for mb, adv, ret, fr in zip(micro, advantages, returns, frozen):
                stats += self._loss_and_backward(mb, adv, ret, fr, num_tokens)
            grad_norm, skipped = self._step_optimizer()
        stats = self._all_reduce(stats)
        self.step += 1
        tokens = stats[0].item()
        adv_abs = sum(masked_sum(a.abs(), mb.loss_mask).item() for a, mb in zip(advantages, micro))
        metrics = {
            "loss": stats[1].item(), "kl": stats[2].item() / tokens, "entropy": stats[3].item() / tokens,
            "clip_frac": stats[4].item() / tokens, "logprob_mismatch": stats[5].item() / tokens,
            "logprob_mismatch_max": stats[6].item(), "grad_norm": grad_norm, "skipped_update": float(skipped),
            "lr": self.optimizer.param_groups[0]["lr"], "learn_tokens": tokens,
            "episodes_dropped_frac": 1.0 - kept.mean().item(),
            "advantage_abs_mean": self._all_reduce_sum(adv_abs) / num_tokens, "learn_s": time.perf_counter() - started,
        }
        if cfg.algo == "ppo":
            metrics["value_mse"] = stats[7].item() / tokens
        if cfg.tis_cap is not None:  # off-policy correction: pi_old / mu, truncated (learners.losses)
            metrics["tis_weight_mean"] = stats[8].item() / tokens
            metrics["tis_truncated_frac"] = stats[9].item() / tokens
        return metrics

    def _process_advantages(self, trajectories: Sequence[Trajectory], mine: Sequence[int], micro: list[Batch],
                            kept: torch.Tensor) -> list[torch.Tensor]:
        """GRPO/RLOO process supervision: turn rewards normalised over each group's turns on the *full* batch
        (groups straddle shards), then, per micro-batch of this rank's shard, summed from each token's turn on
        (``add``: ``learners.advantages.steps_to_go``) or given to that turn's tokens only (``turn``:
        ``turn_local``), and 0 for an episode whose ``kept`` (``Learner.kept``) is 0. Turns without sampled tokens
        are not steps (collate drops them too)."""
        steps = [[turn.reward for turn in t.turns if turn.end > turn.start] for t in trajectories]
        normalized = normalize_step_rewards(steps, [t.group_id for t in trajectories],
                                            leave_one_out=self.cfg.algo == "rloo",
                                            normalize_std=self.cfg.algo == "grpo" and self.cfg.normalize_std)
        weights = kept.tolist()
        rows = [[r * weights[i] for r in normalized[i]] for i in mine]
        place = turn_local if self.cfg.process_reward_mode == "turn" else steps_to_go
        out, at = [], 0
        for mb in micro:
            ends = [[(end, r) for (end, _), r in zip(row_ends, values, strict=True)]
                    for row_ends, values in zip(mb.turn_ends, rows[at: at + len(mb)], strict=True)]
            out.append(place(ends, mb.loss_mask))
            at += len(mb)
        return out

    def _frozen_outputs(self, micro: list[Batch]) -> list[Frozen]:
        """Per micro-batch, before the update: the reference logprobs (adapter off), and the old policy's logprobs
        and values (adapter on) where they are needed.

        With one epoch and no value head the old policy is the current one: its logprobs come free from the
        training forward (``None`` here), saving a full forward pass per step. PPO needs the old values for GAE.
        """
        out = []
        need_old = self.cfg.ppo_epochs > 1 or self.value_head is not None
        with torch.no_grad():
            for mb in micro:
                where = mb.loss_mask > 0
                old = (policy_outputs(self.model, mb.input_ids, mb.attention_mask, self.temperature, where=where,
                                      value_head=self.value_head) if need_old else None)
                with self.model.disable_adapter():
                    ref = token_logprobs(self.model, mb.input_ids, mb.attention_mask, self.temperature, where=where)
                out.append(Frozen(old.logprobs if old else None, ref, old.values if old else None))
        return out

    def _gae_targets(self, micro: list[Batch], frozen: list[Frozen], rewards: Sequence[torch.Tensor]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """PPO: per-token rewards (outcome on the last sampled token, process rewards at turn ends, optional k1
        KL penalty), GAE with the old values, then advantages whitened over the global batch."""
        cfg = self.cfg
        advantages, returns = [], []
        for mb, fr, outcome in zip(micro, frozen, rewards):
            kl = kl_penalty(fr.old, fr.ref, "k1", mb.loss_mask) if cfg.kl_mode == "reward" else None
            r = token_rewards(outcome, mb.turn_ends, mb.loss_mask, kl=kl, kl_coef=cfg.kl_coef)
            adv, ret = gae(r, fr.values, mb.loss_mask, cfg.gamma, cfg.lam)
            advantages.append(adv)
            returns.append(ret)
        if cfg.whiten_advantages:
            moments = torch.tensor([sum(mb.loss_mask.sum().item() for mb in micro),
                                    sum(masked_sum(a, mb.loss_mask).item() for a, mb in zip(advantages, micro)),
                                    sum(masked_sum(a * a, mb.loss_mask).item() for a, mb in zip(advantages, micro))],
                                   dtype=torch.float64)
            n, total, squares = self._all_reduce_sum(moments).tolist()
            mean = total / n
            std = math.sqrt(max(squares / n - mean * mean, 0.0) + 1e-8)
            advantages = [keep_masked((a - mean) / std, mb.loss_mask) for a, mb in zip(advantages, micro)]
        return advantages, returns

    def _loss_and_backward(self, mb: Batch, adv: torch.Tensor, returns: torch.Tensor | None, fr: Frozen,
                           num_tokens: float) -> torch.Tensor:
        cfg, mask = self.cfg, mb.loss_mask
        self.model.train()
        out = policy_outputs(self.model, mb.input_ids, mb.attention_mask, self.temperature, where=mask > 0,
                             return_entropy=True, value_head=self.value_head)
        logprobs, entropy = out.logprobs, out.entropy
        old_lp = logprobs.detach() if fr.old is None else fr.old
        tis = (importance_weights(old_lp, mb.behavior_logprobs, mask, cap=cfg.tis_cap)
               if cfg.tis_cap is not None else None)
        policy = ppo_policy_loss(logprobs, old_lp, adv, mask, clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high,
                                 dual_clip_c=cfg.dual_clip_c, agg=cfg.loss_agg, num_tokens=num_tokens, num_seqs=None,
                                 is_weights=tis.weights if tis is not None else None)
        kl = kl_penalty(logprobs, fr.ref, kind=cfg.kl_estimator, mask=mask)
        loss = policy.loss - cfg.entropy_coef * aggregate(entropy, mask, cfg.loss_agg, num_tokens=num_tokens)
        if cfg.kl_mode == "loss":
            loss = loss + cfg.kl_coef * aggregate(kl, mask, cfg.loss_agg, num_tokens=num_tokens)
        value_err = torch.zeros((), dtype=torch.float64)
        if out.values is not None:
            vloss = value_loss(out.values, fr.values, returns, mask, clip=cfg.value_clip, agg=cfg.loss_agg,
                               num_tokens=num_tokens, num_seqs=None)
            loss = loss + cfg.vf_coef * vloss.loss
            value_err = masked_sum((out.values.detach() - returns) ** 2, mask).double()
        loss.backward()
        n = mask.sum()
        mismatch = (old_lp - mb.behavior_logprobs).abs() * mask
        return torch.stack([
            n.double(), loss.detach().double(), masked_sum(kl.detach(), mask).double(),
            masked_sum(entropy.detach(), mask).double(), (policy.clip_frac * n).double(),
            mismatch.sum().double(), mismatch.max().double(), value_err,
            (masked_sum(tis.weights, mask) if tis is not None else torch.zeros(())).double(),
            (tis.truncated_frac * n if tis is not None else torch.zeros(())).double(),
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

    def _all_reduce_sum(self, x):
        """Sum a float or a tensor over the ranks (identity with one rank)."""
        if self.world_size == 1:
            return x
        t = x.clone() if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t if torch.is_tensor(x) else t.item()

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return stats
        summed = self._all_reduce_sum(stats)
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
        """Everything a resume needs from the learner: adapter weights, value head, optimizer, step, RNG."""
        buf = io.BytesIO()
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step,
                    "torch_rng": torch.get_rng_state()}, buf)
        state = {"adapter": self.adapter_files(), "learner.pt": buf.getvalue()}
        if self.value_head is not None:  # beside the adapter, never inside it
            state[VALUE_HEAD_FILE] = value_head_bytes(self.value_head)
        return state

    def load_state(self, state: dict) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load as load_safetensors

        set_peft_model_state_dict(self.model, load_safetensors(state["adapter"]["adapter_model.safetensors"]))
        if self.value_head is not None:
            if VALUE_HEAD_FILE not in state:
                raise ValueError(f"checkpoint has no {VALUE_HEAD_FILE} but algo is ppo: it was written by a "
                                 "grpo/rloo run. Fix: resume with that run's learner.algo")
            load_value_head_bytes(self.value_head, state[VALUE_HEAD_FILE])
        extra = torch.load(io.BytesIO(state["learner.pt"]), weights_only=False)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.step = extra["step"]
        torch.set_rng_state(extra["torch_rng"])
