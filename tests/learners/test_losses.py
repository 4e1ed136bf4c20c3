"""Loss functions against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from learners.losses import (
    aggregate,
    entropy_from_logits,
    importance_weights,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_policy_loss,
    value_loss,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual.detach(), torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


def log(x: float) -> float:
    return math.log(x)


# Masked reductions and aggregation -------------------------------------------------------------------------------

PER_TOKEN = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), -3.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_sum_and_mean_ignore_mask_zero_even_nan():
    close(masked_sum(PER_TOKEN, MASK), 7.0)
    close(masked_mean(PER_TOKEN, MASK), 7.0 / 3)
    close(masked_mean(PER_TOKEN, MASK, dim=1), [1.5, 4.0])
    close(masked_mean(PER_TOKEN, torch.zeros_like(MASK)), 0.0)  # no token: 0, not nan


def test_aggregate_modes_by_hand():
    # token-mean: (1 + 2 + 4) / 3;  seq-mean-token-mean: (1.5 + 4) / 2;  seq-mean-token-sum: (3 + 4) / 2.
    # An all-padding third row must not count as a sequence.
    per_token = torch.cat([PER_TOKEN, torch.full((1, 3), 9.0)])
    mask = torch.cat([MASK, torch.zeros(1, 3)])
    close(aggregate(per_token, mask, "token-mean"), 7.0 / 3)
    close(aggregate(per_token, mask, "seq-mean-token-mean"), 2.75)
    close(aggregate(per_token, mask, "seq-mean-token-sum"), 3.5)
    with pytest.raises(ValueError, match="aggregation mode"):
        aggregate(per_token, mask, "sum")  # type: ignore[arg-type]


def test_aggregate_global_counts_make_rank_losses_sum_to_full_batch_mean():
    # Two fake data-parallel ranks with unequal token counts (rank 0: 4 + 1 tokens, rank 1: 2 tokens).
    torch.manual_seed(0)
    x = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    per_token = x**2
    for mode, key, count in [("token-mean", "num_tokens", 7), ("seq-mean-token-mean", "num_seqs", 3),
                             ("seq-mean-token-sum", "num_seqs", 3)]:
        full = aggregate(per_token, mask, mode)
        (full_grad,) = torch.autograd.grad(full, x, retain_graph=True)
        rank_losses = [aggregate(per_token[rows], mask[rows], mode, **{key: count}) for rows in (slice(0, 2),
                                                                                               slice(2, 3))]
        close(sum(rank_losses), full.detach())
        (sum_grad,) = torch.autograd.grad(sum(rank_losses), x, retain_graph=True)
        close(sum_grad, full_grad)
    # Without the global count, averaging per-rank token-means weights rank 1's 2 tokens like rank 0's 5: wrong.
    naive = 0.5 * (aggregate(per_token[:2], mask[:2]) + aggregate(per_token[2:], mask[2:]))
    assert not torch.isclose(naive, aggregate(per_token, mask))


# PPO policy loss ---------------------------------------------------------------------------------------------------

# Four sampled tokens, old prob 0.5 each, clip_eps 0.2, and one mask-0 token holding garbage:
#   t0: ratio 1.5, A=+1 -> clipped at 1.2:   loss max(-1.5, -1.2) = -1.2, no gradient
#   t1: ratio 0.5, A=-1 -> clipped at 0.8:   loss max( 0.5,  0.8) =  0.8, no gradient
#   t2: ratio 1.1, A=+2 -> inside the band:  loss -2.2, d/dlogp = -A*ratio = -2.2
#   t3: ratio 1.5, A=-1 -> unclipped side:   loss max( 1.5,  1.2) =  1.5, d/dlogp = +1.5
# token-mean = (-1.2 + 0.8 - 2.2 + 1.5) / 4 = -0.275, gradient / 4 = [0, 0, -0.55, 0.375], clip_frac 2/4,
# ratio_mean (1.5 + 0.5 + 1.1 + 1.5) / 4 = 1.15, approx_kl = mean(r - 1 - log r).
RATIOS = [1.5, 0.5, 1.1, 1.5]
ADVS = [1.0, -1.0, 2.0, -1.0]


def _ppo_inputs(garbage: float = 0.0):
    old = torch.tensor([[log(0.5)] * 4 + [garbage]])
    logprobs = torch.tensor([[log(0.5 * r) for r in RATIOS] + [garbage]], requires_grad=True)
    advantages = torch.tensor([ADVS + [garbage]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    return logprobs, old, advantages, mask


def test_ppo_clipping_both_edges_by_hand():
    logprobs, old, advantages, mask = _ppo_inputs()
    out = ppo_policy_loss(logprobs, old, advantages, mask, clip_eps=0.2)
    close(out.loss, -0.275)
    out.loss.backward()
    close(logprobs.grad, [[0.0, 0.0, -0.55, 0.375, 0.0]])
    close(out.clip_frac, 0.5)
    close(out.ratio_mean, 1.15)
    close(out.approx_kl, sum(r - 1 - math.log(r) for r in RATIOS) / 4)
    close(out.dual_clip_frac, 0.0)


def test_ppo_mask_zero_garbage_changes_nothing():
    ref = ppo_policy_loss(*_ppo_inputs(), clip_eps=0.2)
    ref.loss.backward()
    for garbage in (float("-inf"), float("nan"), 1e6):
        logprobs, old, advantages, mask = _ppo_inputs(garbage)
        out = ppo_policy_loss(logprobs, old, advantages, mask, clip_eps=0.2, dual_clip_c=3.0)
        out.loss.backward()
        for a, b in zip(out[:4], ref[:4], strict=True):
            close(a, b.detach())
        close(logprobs.grad, [[0.0, 0.0, -0.55, 0.375, 0.0]])


def test_ppo_decoupled_high_clip():
    # ratio 1.25, A=+1: clipped with eps 0.2 (loss -1.2, no grad), inside the band with eps_high 0.28 (loss -1.25).
    old, mask, adv = torch.tensor([[log(0.4)]]), torch.ones(1, 1), torch.ones(1, 1)
    lp = torch.tensor([[log(0.5)]], requires_grad=True)
    sym = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2)
    close(sym.loss, -1.2)
    close(sym.clip_frac, 1.0)
    high = ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28)
    close(high.loss, -1.25)
    close(high.clip_frac, 0.0)
    high.loss.backward()
    close(lp.grad, [[-1.25]])


def test_ppo_dual_clip():
    # A=-1, c=3. ratio 4: plain PPO loss max(4, 0.8) = 4, dual clip bounds it at 3 with no gradient.
    # ratio 2 (< c): loss 2, untouched, gradient +2. token-mean = 2.5, grad / 2 = [0, 1].
    old, mask, adv = torch.tensor([[log(0.1), log(0.1)]]), torch.ones(1, 2), torch.tensor([[-1.0, -1.0]])
    lp = torch.tensor([[log(0.4), log(0.2)]], requires_grad=True)
    close(ppo_policy_loss(lp, old, adv, mask).loss, 3.0)
    out = ppo_policy_loss(lp, old, adv, mask, dual_clip_c=3.0)
    close(out.loss, 2.5)
    close(out.dual_clip_frac, 0.5)
    out.loss.backward()
    close(lp.grad, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="dual_clip_c"):
        ppo_policy_loss(lp, old, adv, mask, dual_clip_c=0.9)


def test_ppo_importance_weights_scale_the_token_loss():
    logprobs, old, advantages, mask = _ppo_inputs()
    w = torch.tensor([[1.0, 1.0, 0.5, 2.0, 123.0]])
    # (-1.2 + 0.8 - 2.2 * 0.5 + 1.5 * 2) / 4 = 1.5 / 4
    close(ppo_policy_loss(logprobs, old, advantages, mask, is_weights=w).loss, 0.375)


# Value loss -------------------------------------------------------------------------------------------------------


def test_value_loss_clipping_by_hand():
    # old 1.0, clip 0.2, returns 2.0:
    #   v=1.5: v_clip 1.2, (1.5-2)^2 = 0.25 < (1.2-2)^2 = 0.64 -> 0.32, clipped (no gradient)
    #   v=1.1: v_clip 1.1, both 0.81                          -> 0.405, not clipped, grad (v - R) = -0.9
    #   v=0.5: v_clip 0.8, 2.25 > 1.44                         -> 1.125, not clipped, grad -1.5
    # mean 1.85 / 3 = 0.616667, clip_frac 1/3; grads / 3. A mask-0 fourth token holds garbage.
    values = torch.tensor([[1.5, 1.1, 0.5, float("nan")]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0, 1.0, 50.0]])
    returns = torch.tensor([[2.0, 2.0, 2.0, float("inf")]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = value_loss(values, old, returns, mask, clip=0.2)
    close(out.loss, 1.85 / 3)
    close(out.clip_frac, 1 / 3)
    out.loss.backward()
    close(values.grad, [[0.0, -0.3, -0.5, 0.0]])
    # Unclipped: 0.5 * (0.25 + 0.81 + 2.25) / 3
    close(value_loss(values, old, returns, mask, clip=None).loss, 0.5 * 3.31 / 3)


# KL estimators ----------------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    # d = log p - log q.  Token 0: p=0.5, q=0.25, d = ln 2 = 0.693147. Token 1: p=0.25, q=0.5, d = -ln 2.
    #   k1 = d;  k2 = d^2 / 2 = 0.240227;  k3 = exp(-d) + d - 1 = 0.5 + 0.693147 - 1 = 0.193147 (token 0),
    #                                                      2 - 0.693147 - 1 = 0.306853 (token 1)
    lp, ref = torch.tensor([[log(0.5), log(0.25)]]), torch.tensor([[log(0.25), log(0.5)]])
    close(kl_penalty(lp, ref, "k1"), [[0.693147, -0.693147]])
    close(kl_penalty(lp, ref, "k2"), [[0.240227, 0.240227]])
    close(kl_penalty(lp, ref, "k3"), [[0.193147, 0.306853]])
    masked = kl_penalty(torch.tensor([[log(0.5), float("-inf")]]), torch.tensor([[log(0.25), 0.0]]), "k3",
                        mask=torch.tensor([[1.0, 0.0]]))
    close(masked, [[0.193147, 0.0]])
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(lp, ref, "k4")  # type: ignore[arg-type]


def test_k3_is_nonnegative_and_estimates_kl_from_policy_samples():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(1000, generator=g) * 5
    assert (kl_penalty(d, torch.zeros_like(d), "k3") >= 0).all()
    # Monte Carlo: x ~ p, KL(p || q) = sum p log(p/q) = 0.5 ln 2.5 + 0.3 ln 0.6 + 0.2 ln(2/3) = 0.223804
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    true_kl = float((p * (p / q).log()).sum())
    assert math.isclose(true_kl, 0.223804, abs_tol=1e-5)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    k3 = kl_penalty(p.log()[x], q.log()[x], "k3")
    k1 = kl_penalty(p.log()[x], q.log()[x], "k1")
    assert abs(float(k3.mean()) - true_kl) < 0.005
    assert abs(float(k1.mean()) - true_kl) < 0.005
    # Samples from q instead of p estimate a different quantity: the sign convention matters.
    y = torch.multinomial(q, 200_000, replacement=True, generator=g)
    assert abs(float(kl_penalty(p.log()[y], q.log()[y], "k3").mean()) - true_kl) > 0.02


# Entropy, importance weights --------------------------------------------------------------------------------------


def test_entropy_uniform_is_log_v_and_stable():
    close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)))
    close(entropy_from_logits(torch.full((1, 1, 5), 1e4)), [[math.log(5)]])
    close(entropy_from_logits(torch.tensor([[[0.0, 0.0, float("-inf")]]])), [[math.log(2)]])
    close(entropy_from_logits(torch.tensor([[[100.0, 0.0, 0.0]]])), [[0.0]], atol=1e-4)


def test_importance_weights_truncate_at_cap():
    # t0: pi_old 0.5 / mu 0.1 = 5 -> truncated to cap 2;  t1: 0.2 / 0.4 = 0.5;  t2: mask 0 -> weight 0.
    old = torch.tensor([[log(0.5), log(0.2), 3.0]])
    behavior = torch.tensor([[log(0.1), log(0.4), float("-inf")]])
    out = importance_weights(old, behavior, torch.tensor([[1.0, 1.0, 0.0]]), cap=2.0)
    close(out.weights, [[2.0, 0.5, 0.0]])
    close(out.mean, 1.25)
    close(out.truncated_frac, 0.5)
    close(out.mismatch_kl, ((5 - 1 - math.log(5)) + (0.5 - 1 - math.log(0.5))) / 2)
    assert not out.weights.requires_grad
