"""Advantage estimators against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from learners.advantages import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    rloo_advantages,
    token_rewards,
    whiten,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# GAE -------------------------------------------------------------------------------------------------------------

# Three sampled tokens, gamma=0.9, lam=0.8 (gamma*lam=0.72), V = [0.5, 0.4, 0.3], outcome reward 1 on the last:
#   delta_2 = 1 + 0.9*0   - 0.3 =  0.7            A_2 = 0.7
#   delta_1 = 0 + 0.9*0.3 - 0.4 = -0.13           A_1 = -0.13 + 0.72*0.7   =  0.374
#   delta_0 = 0 + 0.9*0.4 - 0.5 = -0.14           A_0 = -0.14 + 0.72*0.374 =  0.12928
#   returns = A + V = [0.62928, 0.774, 1.0]
HAND_ADV = [0.12928, 0.374, 0.7]
HAND_RET = [0.62928, 0.774, 1.0]


def test_gae_three_steps_by_hand():
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.4, 0.3]]), torch.ones(1, 3),
                   gamma=0.9, lam=0.8)
    close(adv, [HAND_ADV])
    close(ret, [HAND_RET])


def test_gae_skips_tool_tokens_between_turns_and_ignores_padding():
    # turn 1 = [0, 2), tool result = [2, 4) (mask 0), turn 2 = [4, 5), padding = [5, 7). The tool tokens carry
    # values and rewards that must not matter: the bootstrap of token 1 is V(token 4) = 0.3, not V(token 2) = 9.
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 9.0, -7.0, 0.3, 5.0, float("nan")]])
    rewards = torch.tensor([[0.0, 0.0, 5.0, 3.0, 1.0, 2.0, float("inf")]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[HAND_ADV[0], HAND_ADV[1], 0, 0, HAND_ADV[2], 0, 0]])
    close(ret, [[HAND_RET[0], HAND_RET[1], 0, 0, HAND_RET[2], 0, 0]])
    close(ret, (adv + torch.nan_to_num(values)) * mask)


def test_gae_rows_are_independent_and_lambda_one_is_monte_carlo():
    # gamma = lam = 1: A_t = (sum of rewards from t on) - V_t. Row 0: rewards [0, 1, 2] -> returns [3, 3, 2].
    rewards = torch.tensor([[0.0, 1.0, 2.0], [4.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(ret, [[3, 3, 2], [4, 0, 0]])
    close(adv, [[2, 2, 1], [2, 0, 0]])


def test_gae_has_no_gradient():
    values = torch.tensor([[0.5, 0.4]], requires_grad=True)
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    assert not adv.requires_grad and not ret.requires_grad


# GRPO / RLOO -----------------------------------------------------------------------------------------------------


def test_grpo_two_groups_sample_std_by_hand():
    # group a = [1, 0, 1, 0]: mean 0.5, sample std = sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5 / 0.57735 = +-0.866025
    # group b = [2, 4]:       mean 3,   sample std = sqrt(2 / 1) = 1.414214  -> +-1 / 1.414214 = +-0.707107
    scores = torch.tensor([1.0, 2.0, 0.0, 1.0, 4.0, 0.0])
    groups = ["a", "b", "a", "a", "b", "a"]
    close(grpo_advantages(scores, groups), [0.866025, -0.707107, -0.866025, 0.866025, 0.707107, -0.866025])
    # Dr. GRPO: no std division, just r - mean.
    close(grpo_advantages(scores, groups, normalize_std=False), [0.5, -1.0, -0.5, 0.5, 1.0, -0.5])


def test_grpo_singleton_and_zero_std_groups_get_exactly_zero():
    # 0.9 three times: in float32, 0.9 - mean = 6e-8 (round-off), and 6e-8 / (std + eps) is about 0.06 without the
    # explicit zero-std rule.
    scores = torch.tensor([0.7, 0.9, 0.9, 0.9, 1.0, 0.0])
    adv = grpo_advantages(scores, ["solo", "same", "same", "same", "x", "x"])
    assert adv[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    close(adv[4:], [0.707107, -0.707107])


def test_rloo_group_of_three_by_hand():
    # [1, 2, 6]: 1 - (2+6)/2 = -3;  2 - (1+6)/2 = -1.5;  6 - (1+2)/2 = 4.5.  Singleton -> 0.
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 9.0, 6.0]), ["g", "g", "one", "g"])
    close(adv, [-3.0, -1.5, 0.0, 4.5])


def test_group_ids_must_match_scores():
    with pytest.raises(ValueError, match="group_ids"):
        grpo_advantages(torch.tensor([1.0, 2.0]), ["a"])


# Token helpers ---------------------------------------------------------------------------------------------------


def test_broadcast_to_tokens():
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    close(broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask), [[2, 0, 2], [0, -1, 0]])


def test_whiten_masked():
    # mask-1 entries [1, 2, 3]: mean 2, population var 2/3 -> (x - 2) / 0.816497 = [-1.224745, 0, 1.224745]
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    close(whiten(x, mask), [[-1.224745, 0, 0], [1.224745, 0, 0]])
    close(whiten(x, mask, shift_mean=False), [[0.775255, 2, 0], [3.224745, 0, 0]])


def test_token_rewards_outcome_turns_and_k1_penalty():
    # Row 0: turn 1 = [0, 2), tool result [2, 4), turn 2 = [4, 6), padding [6, 7).
    # outcome 1.0 -> token 5; turn rewards 0.1 -> token 1 (end 2), 0.3 -> token 5 (end 6); k1 0.5 * 1 on mask-1.
    # Row 1: turn reward with end 3 lands on token 1, the last sampled token before 3 (token 2 is a tool token).
    # Row 2: all padding, receives nothing.
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1, 0], [1, 1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    kl = torch.ones(3, 7)
    kl[0, 2] = 100.0  # a tool token's "KL" must not be charged
    out = token_rewards(torch.tensor([1.0, 2.0, 5.0]), [[(2, 0.1), (6, 0.3)], [(3, 0.5)], []], mask,
                        kl=kl, kl_coef=0.5)
    close(out, [[-0.5, -0.4, 0, 0, -0.5, 0.8, 0], [-0.5, 0.0, 0, 1.5, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])


def test_token_rewards_rejects_a_turn_end_before_any_sampled_token():
    mask = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match="turn end 1"):
        token_rewards(torch.tensor([1.0]), [[(1, 0.2)]], mask)


def test_token_rewards_then_gae_end_to_end():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]])
    rewards = token_rewards(torch.tensor([1.0]), [[]], mask)
    adv, _ = gae(rewards, torch.tensor([[0.5, 0.4, 0.0, 0.0, 0.3]]), mask, gamma=0.9, lam=0.8)
    close(adv, [[HAND_ADV[0], HAND_ADV[1], 0, 0, HAND_ADV[2]]])
    assert math.isclose(float(rewards.sum()), 1.0)
