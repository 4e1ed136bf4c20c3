"""Learner configuration: the RL algorithm, optimisation, and the learner group's shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from jobs.config_loader import doc
from learners.policy import LoraSettings


@dataclass(frozen=True)
class LearnerConfig:
    algo: Literal["grpo", "rloo", "ppo"] = doc("grpo", "advantage estimator: group-normalised (GRPO), leave-one-out "
                                                       "(RLOO), or PPO with a value head and GAE")
    lr: float = doc(1e-3, "AdamW learning rate of the LoRA weights. On the default job 1e-3 took held-out success "
                          "46% -> 71% in 6 GRPO steps, 3e-4 only to 55% (docs/training.md)")
    warmup_steps: int = doc(2, "linear LR warm-up, in optimizer steps")
    adam_eps: float = doc(1e-8, "AdamW epsilon; tests raise it so a step is linear in the gradient")
    weight_decay: float = doc(0.0, "AdamW weight decay; 0 keeps the adapter pulled only by the KL term")
    max_grad_norm: float = doc(1.0, "gradient-norm clip")
    micro_batch_size: int = doc(4, "episodes per forward/backward; gradients accumulate over the batch")
    ppo_epochs: int = doc(1, "passes over each batch; 1 = on-policy (the ratio starts at 1)")
    clip_eps: float = doc(0.2, "PPO ratio clip (low edge, and high edge unless clip_eps_high is set)")
    clip_eps_high: float | None = doc(None, "decoupled high clip (DAPO's clip-higher); None = clip_eps")
    dual_clip_c: float | None = doc(None, "dual clip bound c > 1 for negative advantages; None = off")
    tis_cap: float | None = doc(None, "truncated importance sampling: each token's loss times min(pi_old / mu, cap), "
                                      "mu = vLLM's behavior logprobs (an older adapter version in async mode); "
                                      "None = off. Async training needs it (e.g. 2.0); logged as tis_weight_mean")
    kl_coef: float = doc(0.02, "weight of KL(policy || reference); the reference is the adapter switched off")
    kl_estimator: Literal["k1", "k2", "k3"] = doc("k3", "k3 in the loss is unbiased and >= 0 (Schulman)")
    kl_mode: Literal["loss", "reward"] = doc("loss", "KL as a loss term (kl_estimator, usually k3), or as a k1 "
                                                     "per-token penalty in the reward before GAE (PPO only)")
    gamma: float = doc(1.0, "PPO/GAE discount per sampled token; 1 = the episode's outcome is not discounted")
    lam: float = doc(0.95, "GAE lambda: 1 = Monte-Carlo return minus V, 0 = one-step TD")
    vf_coef: float = doc(0.1, "PPO value-loss weight (the value head shares the LoRA backbone)")
    value_clip: float | None = doc(0.2, "PPO value clip around the old values; None = unclipped")
    whiten_advantages: bool = doc(True, "PPO: whiten token advantages over the global batch (all ranks)")
    entropy_coef: float = doc(0.0, "entropy bonus weight; 0 by default, sampling at T=1 explores enough")
    normalize_std: bool = doc(True, "GRPO: divide each group's centred rewards by its std (the paper). False = Dr. "
                                    "GRPO (Liu et al. 2025): the std would blow tiny shaping differences in a group "
                                    "that all failed up to +-1 advantages (docs/envs/support_desk.md)")
    uniform_outcome_groups: Literal["keep", "drop"] = doc(
        "keep", "GRPO/RLOO: 'drop' zeroes every advantage (outcome and process) of a group whose episodes all have "
                "the same outcome (reward_breakdown['outcome'], else the total): DAPO's dynamic-sampling filter, "
                "without the resampling. Shaping then acts only where the outcome has contrast")
    process_reward_mode: Literal["none", "add", "turn"] = doc(
        "none", "GRPO/RLOO: 'add' adds process supervision (DeepSeekMath 4.1.3: turn rewards normalised over the "
                "group's turns, summed from each token's turn on) to the outcome advantage; 'turn' adds each "
                "turn's normalised reward to that turn's tokens only (a late penalty does not land on the earlier "
                "turns); 'none' ignores Turn.reward. PPO always uses turn rewards (GAE)")
    process_reward_coef: float = doc(1.0, "weight of the process advantage ('add' or 'turn'); 1 = the paper's formula "
                                          "(the normalisation makes reward.process_weights relative only)")
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = doc(
        "token-mean", "how per-token losses combine; token-mean over the global batch (DAPO)")
    dtype: str = doc("float32", "learner weights dtype; fp32 is exact enough to compare against vLLM's logprobs")
    lora: LoraSettings = doc(LoraSettings(), "the trained adapter")
    num_workers: int = doc(1, "data-parallel learner workers (gloo on CPU, NCCL on GPU)")
    num_cpus_per_worker: float = doc(0.5, "Ray CPUs reserved per learner worker; fractional so the default job fits "
                                          "2 cores (sync mode: rollout and learning alternate)")
    cpu_threads: int | None = doc(None, "torch threads of a CPU learner; None = all cores of the node (the phases "
                                        "alternate, so learning may use the cores the idle engine leaves)")
    use_gpu: bool = doc(False, "one GPU per learner worker")
    seed: int = doc(0, "torch seed for the adapter's initialisation")

    def validate(self) -> list[str]:
        problems = []
        for name in ("lr", "max_grad_norm", "clip_eps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}: must be > 0, got {getattr(self, name)}. Fix: use the default")
        for name in ("micro_batch_size", "ppo_epochs", "num_workers"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}. Fix: set a positive integer")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1:
            problems.append(f"dual_clip_c: must be > 1, got {self.dual_clip_c}. Fix: use 3.0 or null")
        if self.tis_cap is not None and not self.tis_cap >= 1:
            problems.append(f"tis_cap: must be >= 1, got {self.tis_cap}. Fix: use 2.0 (or null for off)")
        if self.kl_coef < 0 or self.entropy_coef < 0:
            problems.append("kl_coef/entropy_coef: must be >= 0. Fix: use 0 to turn a term off")
        if self.kl_mode == "reward" and self.algo != "ppo":
            problems.append(f"kl_mode: 'reward' needs per-token rewards (algo ppo), got algo {self.algo}. Fix: use "
                            "kl_mode=loss with grpo/rloo, or algo=ppo")
        if self.process_reward_mode != "none" and self.algo == "ppo":
            problems.append(f"process_reward_mode: {self.process_reward_mode!r} is for grpo/rloo; PPO already puts "
                            "Turn.reward into GAE. Fix: use process_reward_mode=none with algo ppo")
        if self.uniform_outcome_groups == "drop" and self.algo == "ppo":
            problems.append("uniform_outcome_groups: 'drop' is for grpo/rloo (groups of one task); PPO has no groups. "
                            "Fix: use uniform_outcome_groups=keep with algo ppo")
        if not (math.isfinite(self.process_reward_coef) and self.process_reward_coef >= 0):
            problems.append(f"process_reward_coef: must be a finite number >= 0, got {self.process_reward_coef}. "
                            "Fix: use 1.0 (or process_reward_mode=none to turn process rewards off)")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            problems.append(f"gamma/lam: must be in [0, 1], got {self.gamma}/{self.lam}. Fix: use 1.0/0.95")
        if self.vf_coef < 0 or (self.value_clip is not None and self.value_clip <= 0):
            problems.append("vf_coef must be >= 0 and value_clip > 0 or null. Fix: use 0.1 and 0.2")
        if self.dtype not in ("float32", "bfloat16"):
            problems.append(f"dtype: {self.dtype!r} unsupported. Fix: use float32 or bfloat16")
        return problems
