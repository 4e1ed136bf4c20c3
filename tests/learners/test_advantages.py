"""Advantage estimators against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from learners.advantages import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    groups_with_contrast,
    normalize_step_rewards,
    rloo_advantages,
    steps_to_go,
    turn_local,
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


def test_a_turn_reward_moves_gae_on_its_turn_and_earlier_tokens_only():
    # turn 1 = [0, 2), tool result [2, 4), turn 2 = [4, 6); V = 0, gamma = 0.9, lam = 0.8 (gamma * lam = 0.72).
    # A turn reward rho = 0.5 on turn 1 lands on token 1: A_1 += 0.5, A_0 += 0.72 * 0.5 = 0.36; turn 2 unchanged.
    # On turn 2 it lands on token 5: A_5 += 0.5, A_4 += 0.36, A_1 += 0.72^2 * 0.5 = 0.2592, A_0 += 0.186624.
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    values = torch.zeros(1, 6)

    def advantages(turns):
        adv, _ = gae(token_rewards(torch.tensor([1.0]), [turns], mask), values, mask, gamma=0.9, lam=0.8)
        return adv

    base = advantages([(2, 0.0), (6, 0.0)])
    close(advantages([(2, 0.5), (6, 0.0)]) - base, [[0.36, 0.5, 0, 0, 0, 0]])
    close(advantages([(2, 0.0), (6, 0.5)]) - base, [[0.186624, 0.2592, 0, 0, 0.36, 0.5]])


# Process supervision (DeepSeekMath 4.1.3) ----------------------------------------------------------------------

# Group "a": episode 0 steps [0.1, -0.2, 0.0], episode 1 steps [0.3, 0.0]. Pooled R_a = [0.1, -0.2, 0.0, 0.3, 0.0]:
#   mean 0.2 / 5 = 0.04; squared deviations 0.0036 + 0.0576 + 0.0016 + 0.0676 + 0.0016 = 0.132;
#   sample std sqrt(0.132 / 4) = 0.181659  ->  (r - 0.04) / 0.181659:
STEPS = [[0.1, -0.2, 0.0], [0.3, 0.0], [0.5], [], [0.2, 0.2], [0.2]]
GROUPS = ["a", "a", "b", "b", "c", "c"]
NORM_A = [[0.330289, -1.321157, -0.220193], [1.431253, -0.220193]]


def test_normalize_step_rewards_by_hand():
    out = normalize_step_rewards(STEPS, GROUPS)
    for got, want in zip(out[:2], NORM_A):
        assert got == pytest.approx(want, abs=1e-5)
    # group b has one step (no baseline), group c all equal (no signal): exactly 0, shapes kept
    assert out[2:] == [[0.0], [], [0.0, 0.0], [0.0]]
    # centring only (Dr. GRPO style): r - 0.04
    assert normalize_step_rewards(STEPS, GROUPS, normalize_std=False)[0] == pytest.approx([0.06, -0.24, -0.04])


def test_normalize_step_rewards_leave_one_out_by_hand():
    # episode 0's baseline = mean of episode 1's steps = 0.15; episode 1's = mean of episode 0's = -0.1 / 3
    out = normalize_step_rewards(STEPS, GROUPS, leave_one_out=True, normalize_std=False)
    assert out[0] == pytest.approx([-0.05, -0.35, -0.15])
    assert out[1] == pytest.approx([0.3 + 1 / 30, 1 / 30])
    assert out[2] == [0.0]  # the only other episode of group b has no steps: no baseline
    with pytest.raises(ValueError, match="group_ids"):
        normalize_step_rewards(STEPS, GROUPS[:2])


def test_steps_to_go_by_hand():
    # Row 0: turn 1 = [0, 2), tool [2, 4), turn 2 = [4, 6), tool [6, 7), turn 3 = [7, 8) with rewards a, b, c:
    #   tokens 0, 1 -> a + b + c;  tokens 4, 5 -> b + c;  token 7 -> c;  tool tokens 0.
    # Row 1: one turn ending at 3 (its last sampled token is 1), then padding.
    a, b, c = 0.5, -1.0, 0.25
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0, 0, 0]])
    out = steps_to_go([[(2, a), (6, b), (8, c)], [(3, 2.0)]], mask)
    close(out, [[-0.25, -0.25, 0, 0, -0.75, -0.75, 0, 0.25], [2, 2, 0, 0, 0, 0, 0, 0]])


def test_turn_local_gives_each_turn_its_own_reward_only():
    # The rows of test_steps_to_go_by_hand: tokens 0, 1 -> a;  tokens 4, 5 -> b;  token 7 -> c;  tool tokens 0.
    a, b, c = 0.5, -1.0, 0.25
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0, 0, 0]])
    turns = [[(2, a), (6, b), (8, c)], [(3, 2.0)]]
    close(turn_local(turns, mask), [[a, a, 0, 0, b, b, 0, c], [2, 2, 0, 0, 0, 0, 0, 0]])
    # steps_to_go is the same placement summed from the end: its first turn carries the later turns' rewards.
    close(steps_to_go(turns, mask)[0, :2], [a + b + c] * 2)
    with pytest.raises(ValueError, match="out of order"):
        turn_local([[(6, a), (2, b)], []], mask)
    with pytest.raises(ValueError, match="rows"):
        turn_local(turns[:1], mask)


def test_turn_local_favours_the_valid_first_call_in_a_group_that_all_failed():
    # Stop 29's case: both episodes failed (outcome advantage 0). Episode 0 opens with a valid call, then makes three
    # caller errors (-0.3 each) and answers; episode 1 opens with a made-up id (-0.3) and gives up. Summed to the
    # end, episode 0's valid first call is the worse opening; turn-local, it is the better one.
    norm = normalize_step_rewards([[0.0, -0.3, -0.3, -0.3, 0.0], [-0.3, 0.0]], ["g", "g"], normalize_std=False)
    mask = torch.ones(2, 5)
    ends = [[(k + 1, r) for k, r in enumerate(row)] for row in norm]
    summed, local = steps_to_go(ends, mask), turn_local(ends, mask)
    assert summed[0, 0] < summed[1, 0]
    assert local[0, 0] > 0 > local[1, 0]


def test_grpo_with_process_supervision_end_to_end_by_hand():
    # Group "a" of the hand values above, episode 0 = row 0 with turns ending at 2, 6, 8 (mask of the previous
    # test), episode 1 = row 1 with turns ending at 2 and 5. Outcomes 1 and 0: GRPO outcome advantages +-0.707107.
    mask = torch.tensor([[1.0, 1, 0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 0, 0, 0]])
    norm = normalize_step_rewards(STEPS[:2], GROUPS[:2])
    ends = [[(2, norm[0][0]), (6, norm[0][1]), (8, norm[0][2])], [(2, norm[1][0]), (5, norm[1][1])]]
    outcome = broadcast_to_tokens(grpo_advantages(torch.tensor([1.0, 0.0]), ["a", "a"]), mask)
    total = outcome + steps_to_go(ends, mask)
    n0, n1 = NORM_A
    r0 = [0.707107 + sum(n0), 0.707107 + sum(n0), 0, 0, 0.707107 + n0[1] + n0[2], 0.707107 + n0[1] + n0[2], 0,
          0.707107 + n0[2]]
    r1 = [-0.707107 + sum(n1), -0.707107 + sum(n1), 0, 0, -0.707107 + n1[1], 0, 0, 0]
    close(total, [r0, r1])
    # numerically: row 0 first token 0.707107 - 1.211061 = -0.503954
    assert float(total[0, 0]) == pytest.approx(-0.503954, abs=1e-5)


def test_groups_with_contrast_keeps_only_groups_whose_outcomes_differ():
    # a: solved and failed; b: all failed; c: all solved; d: one episode (no baseline, nothing to compare).
    kept = groups_with_contrast([1, 0, 0, 0, 1, 1, 1], ["a", "a", "b", "b", "c", "c", "d"])
    assert kept.tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert groups_with_contrast([0.0, 0.5], ["a", "a"]).tolist() == [1, 1]  # partial credit is a contrast too
    with pytest.raises(ValueError, match="group_ids"):
        groups_with_contrast([1, 0], ["a"])
