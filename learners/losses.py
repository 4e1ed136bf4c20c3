"""Loss functions for PPO-family updates: masked reductions, the clipped policy surrogate, the clipped value loss,
KL estimators, entropy and truncated importance weights.

Token tensors are [B, T], aligned with ``mask`` [B, T] (1.0 = a policy-sampled token that enters the loss, 0.0 =
prompt, tool result, runner tokens, padding). Mask-0 positions never influence a loss or a statistic: inputs are
read through ``torch.where`` before any arithmetic, so even ``-inf`` logprobs or ``nan`` there are harmless, for
the value and for the gradient. Statistics (clip fractions, approximate KL, ...) are detached masked means.

Sign conventions: ``logprobs`` are log pi_theta (the policy being trained), ``old_logprobs`` log pi_old (the
policy the advantages were computed for), ``ref_logprobs`` log pi_ref (the frozen reference: base model with the
adapter off), ``behavior_logprobs`` log mu (what vLLM sampled with). Losses are minimised.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "AggMode", "ISWeightsOut", "PolicyLossOut", "ValueLossOut", "aggregate", "entropy_from_logits",
    "importance_weights", "kl_penalty", "masked_mean", "masked_sum", "ppo_policy_loss", "value_loss",
]

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


def keep_masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` on mask-1 positions, 0 elsewhere; ``where`` rather than ``x * mask`` so nan/inf stay out (0 * inf is
    nan, and so would be its gradient)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


# Masked reductions -----------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """``sum(x * mask)`` over ``dim`` (all dims when None), ignoring whatever sits at mask-0 positions."""
    x = keep_masked(x, mask)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """``sum(x * mask) / sum(mask)`` over ``dim``; 0 where there is no mask-1 entry (not nan)."""
    count = mask.float().sum() if dim is None else mask.float().sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def aggregate(per_token: Tensor, mask: Tensor, mode: AggMode = "token-mean", num_tokens: float | None = None,
              num_seqs: float | None = None) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    - ``token-mean``: ``sum_{b,t} l(b,t) m(b,t) / N_tok`` — every sampled token weighs the same (DAPO, Yu et al.
      2025; veRL's default): long episodes are not down-weighted.
    - ``seq-mean-token-mean``: ``1/N_seq * sum_b [ sum_t l m / sum_t m ]`` — the original GRPO/PPO-for-LLM
      form (Shao et al. 2024): every episode weighs the same, its tokens share that weight.
    - ``seq-mean-token-sum``: ``1/N_seq * sum_b sum_t l m`` — each episode contributes its summed token loss.

    ``N_tok`` defaults to this batch's number of mask-1 tokens and ``N_seq`` to its number of rows with at least
    one mask-1 token (all-padding rows do not count).

    Data parallelism / gradient accumulation: pass ``num_tokens`` (``num_seqs``) = the count over the *whole*
    optimiser step, i.e. summed over ranks and micro-batches (one ``all_reduce`` of the local counts before the
    step). Each per-rank, per-micro-batch loss is then ``local_sum / global_count``, so the *sum* of those losses
    (and of their gradients) is exactly the full-batch mean, however unevenly tokens fall across ranks. Plain
    per-rank means would instead weight a rank's tokens by 1/local_count. Note that DDP/FSDP *average*
    gradients over ranks: multiply the loss by the world size there to turn that average back into the sum.
    """
    m = mask.float()
    # clamp(min=1): a batch (or step) with no sampled token gives a loss of 0, not nan.
    if mode == "token-mean":
        denom = m.sum().clamp(min=1) if num_tokens is None else max(float(num_tokens), 1.0)
        return masked_sum(per_token, mask) / denom
    seq_tokens = m.sum(dim=1)
    if mode == "seq-mean-token-mean":
        per_seq = masked_sum(per_token, mask, dim=1) / seq_tokens.clamp(min=1)
    elif mode == "seq-mean-token-sum":
        per_seq = masked_sum(per_token, mask, dim=1)
    else:
        raise ValueError(f"unknown aggregation mode {mode!r}; use one of {AggMode.__args__}")
    denom = (seq_tokens > 0).float().sum().clamp(min=1) if num_seqs is None else max(float(num_seqs), 1.0)
    return per_seq.sum() / denom


# ALGO LOGIC: policy loss -----------------------------------------------------------------------------------------


class PolicyLossOut(NamedTuple):
    loss: Tensor  # scalar, differentiable
    clip_frac: Tensor  # fraction of sampled tokens where the clipped (gradient-free) branch was taken
    approx_kl: Tensor  # k3 estimate of KL(pi_old || pi_theta) on the sampled tokens
    ratio_mean: Tensor  # mean of pi_theta / pi_old over the sampled tokens
    dual_clip_frac: Tensor  # fraction of sampled tokens bounded by the dual clip (0 when it is off)


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2,
                    clip_eps_high: float | None = None, dual_clip_c: float | None = None, agg: AggMode = "token-mean",
                    num_tokens: float | None = None, num_seqs: float | None = None,
                    is_weights: Tensor | None = None) -> PolicyLossOut:
    """PPO clipped surrogate (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7), per token::

        rho = exp(logprobs - old_logprobs)
        l   = max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high))

    ``eps_low = clip_eps``, ``eps_high = clip_eps_high or clip_eps``: a larger high edge is DAPO's "clip-higher"
    (Yu et al. 2025), which keeps low-probability tokens able to grow. Where the clipped branch wins, the token
    has no gradient (A > 0 with rho > 1 + eps_high, A < 0 with rho < 1 - eps_low).

    Dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL"), ``c > 1``: for A < 0 the
    loss is also bounded above, ``l = min(l, -c * A)``, so a token whose ratio exploded (rho > c, typical of stale
    off-policy samples) cannot dominate the update; it gets no gradient.

    ``is_weights`` (optional, [B, T], detached) multiplies the per-token loss: the truncated importance weights
    ``pi_old / mu`` of ``importance_weights`` for async rollouts (vLLM sampled from mu, not pi_old).

    The scalar is reduced with ``aggregate(…, agg, num_tokens, num_seqs)`` (see there for data parallelism).
    """
    if clip_eps <= 0 or (clip_eps_high is not None and clip_eps_high <= 0):
        raise ValueError(f"clip_eps={clip_eps} and clip_eps_high={clip_eps_high} must be > 0")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c={dual_clip_c} must be > 1 (it bounds the loss at c * |A| for A < 0)")
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    keep = mask.bool()
    # Zero the inputs at mask-0 positions first: rho is then exactly 1 there, finite, with a finite gradient.
    log_ratio = keep_masked(logprobs, mask) - keep_masked(old_logprobs.detach(), mask)
    adv = keep_masked(advantages.detach(), mask)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(loss_unclipped, loss_clipped)
    dual = torch.zeros_like(keep)
    if dual_clip_c is not None:
        bound = -adv * dual_clip_c
        dual = (adv < 0) & (per_token > bound)
        per_token = torch.where(dual, bound, per_token)
    if is_weights is not None:
        per_token = per_token * keep_masked(is_weights.detach(), mask)
    loss = aggregate(per_token, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs)
    with torch.no_grad():
        clipped = (loss_clipped > loss_unclipped) & ~dual
        lr = log_ratio.detach()
        return PolicyLossOut(
            loss=loss,
            clip_frac=masked_mean(clipped.float(), mask),
            # Schulman's k3 with samples from pi_old: (r - 1) - log r, r = pi_theta / pi_old; >= 0, low variance.
            approx_kl=masked_mean(torch.expm1(lr) - lr, mask),
            ratio_mean=masked_mean(ratio.detach(), mask),
            dual_clip_frac=masked_mean(dual.float(), mask),
        )


# ALGO LOGIC: value loss ------------------------------------------------------------------------------------------


class ValueLossOut(NamedTuple):
    loss: Tensor  # scalar, differentiable
    clip_frac: Tensor  # fraction of sampled tokens where the clipped term was the larger one


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None = 0.2,
               agg: AggMode = "token-mean", num_tokens: float | None = None,
               num_seqs: float | None = None) -> ValueLossOut:
    """Clipped value loss (PPO2 in OpenAI baselines; Schulman et al. 2017 implementation)::

        v_clip = old_values + clip(values - old_values, -clip, clip)
        l      = 0.5 * max((values - R)^2, (v_clip - R)^2)

    ``clip=None`` gives the plain ``0.5 * (values - R)^2``. Reduced with ``aggregate``.
    """
    v = keep_masked(values, mask)
    old, ret = keep_masked(old_values.detach(), mask), keep_masked(returns.detach(), mask)
    err = (v - ret) ** 2
    if clip is None:
        return ValueLossOut(aggregate(0.5 * err, mask, agg, num_tokens, num_seqs), torch.zeros(()))
    v_clipped = old + torch.clamp(v - old, -clip, clip)
    err_clipped = (v_clipped - ret) ** 2
    loss = aggregate(0.5 * torch.maximum(err, err_clipped), mask, agg, num_tokens, num_seqs)
    with torch.no_grad():
        clip_frac = masked_mean((err_clipped > err).float(), mask)
    return ValueLossOut(loss, clip_frac)


# KL, entropy, importance weights ---------------------------------------------------------------------------------


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: Literal["k1", "k2", "k3"] = "k3",
               mask: Tensor | None = None) -> Tensor:
    """Per-token estimators of KL(pi_theta || pi_ref) from tokens sampled by pi_theta (J. Schulman, "Approximating
    KL Divergence", 2020). With ``d = logprobs - ref_logprobs = log pi_theta(x) - log pi_ref(x)``::

        k1 = d                       unbiased, high variance, can be negative per token
        k2 = 0.5 * d^2               biased, low variance, >= 0
        k3 = exp(-d) + d - 1         unbiased, low variance, >= 0   (= r - 1 - log r, r = pi_ref / pi_theta)

    k1 is the usual "KL in the reward" (with ``learners.advantages.token_rewards``); k3 is GRPO's "KL in the
    loss" (Shao et al. 2024). Returns [B, T]; with ``mask`` the mask-0 positions are 0 (and never nan).
    """
    if mask is not None:
        logprobs, ref_logprobs = keep_masked(logprobs, mask), keep_masked(ref_logprobs, mask)
    d = logprobs - ref_logprobs
    if kind == "k1":
        out = d
    elif kind == "k2":
        out = 0.5 * d**2
    elif kind == "k3":
        out = torch.expm1(-d) + d  # expm1 keeps precision when d is tiny, where k3 ~ d^2 / 2
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")
    return out if mask is None else keep_masked(out, mask)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax over the last dim, ``H = -sum_v p_v log p_v`` with ``log p = logits - logsumexp``.

    Stable for large logits (log_softmax subtracts the logsumexp) and for ``-inf`` logits (a banned token has
    p = 0 and contributes 0, not ``0 * -inf = nan``). [B, T, V] -> [B, T]; mask it with ``masked_mean``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum(-1)


class ISWeightsOut(NamedTuple):
    weights: Tensor  # [B, T] truncated weights, 0 on mask-0 positions, detached
    mean: Tensor  # masked mean of the truncated weights
    truncated_frac: Tensor  # fraction of sampled tokens whose ratio exceeded the cap
    mismatch_kl: Tensor  # k3 estimate of KL(mu || pi_old): how far the sampler is from the learner


@torch.no_grad()
def importance_weights(logprobs_old: Tensor, behavior_logprobs: Tensor, mask: Tensor, cap: float = 2.0) -> ISWeightsOut:
    """Truncated importance sampling (TIS) weights for rollouts sampled by a policy mu other than pi_old: an older
    adapter version (async mode) or vLLM's numerics (Yao et al. 2025, "Your Efficient RL Framework Secretly
    Brings You Off-Policy RL Training"; truncation as in Espeholt et al. 2018, IMPALA)::

        w = min(pi_old(x) / mu(x), cap) = exp(min(logprobs_old - behavior_logprobs, log cap))

    Multiply the per-token policy loss by ``w`` (``ppo_policy_loss(..., is_weights=w)``). Truncation bounds the
    variance at the price of a bias towards mu. ``behavior_logprobs`` must be the processed (post-temperature)
    logprobs, scattered onto the mask-1 positions of the [B, T] grid.
    """
    if cap <= 0:
        raise ValueError(f"cap={cap} must be > 0 (typically 2 to 10)")
    log_cap = math.log(cap)
    log_ratio = keep_masked(logprobs_old.detach().float(), mask) - keep_masked(behavior_logprobs.float(), mask)
    truncated = log_ratio > log_cap
    weights = keep_masked(torch.exp(torch.clamp(log_ratio, max=log_cap)), mask)
    return ISWeightsOut(
        weights=weights,
        mean=masked_mean(weights, mask),
        truncated_frac=masked_mean(truncated.float(), mask),
        # Samples come from mu, so k3 with r = pi_old / mu estimates KL(mu || pi_old).
        mismatch_kl=masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
    )
