"""Process rewards: the per-turn scorers by hand, their config, and the reward actor writing Turn.reward."""

from __future__ import annotations

import copy
import dataclasses
import doctest

import pytest
import torch

import rewards.process as process_module
from actors.trajectory import check_invariants, read_parquet, write_parquet
from jobs.config_loader import ConfigError, from_dict, undocumented
from learners.advantages import gae, token_rewards
from learners.collate import collate
from rewards import PROCESS_SCORERS, RewardActor, RewardConfig, tool_call_validity, tool_progress
from rewards._examples import example_task, example_trajectory, parse_error, tool_call
from rewards.verifiers import VERIFIERS

TASK = example_task(answer=391)
FAILED = tool_call("error: division by zero", ok=False, expression="1/0")
WRONG = tool_call("381", expression="17 * 23 - 10")
RIGHT = tool_call("391")
ON = {"tool_call_validity": 1.0, "tool_progress": 1.0}


def test_doctests():
    assert doctest.testmod(process_module).failed == 0


# ---- tool_call_validity ----


def test_validity_per_turn_by_hand():
    # turns: unreadable call, failed call, wrong-but-ran call, repaired (non-strict) call, answer
    traj = example_trajectory(calls=[parse_error(), FAILED, WRONG, tool_call("391", strict=False)], final_answer="391")
    assert tool_call_validity(traj, TASK) == [-0.2, -0.2, 0.1, 0.1, 0.0]
    assert tool_call_validity(traj, TASK, ok=0.5, failed=-1.0) == [-1.0, -1.0, 0.5, 0.5, 0.0]


def test_one_failed_call_fails_its_turn():
    traj = example_trajectory(calls=[RIGHT, FAILED], final_answer="391")  # 3 turns
    traj.tool_calls[1].turn = 0  # both calls in turn 0 (the order of the tool messages is unchanged)
    assert tool_call_validity(traj, TASK) == [-0.2, 0.0, 0.0]


def test_truncated_turn_without_a_call_scores_zero():
    traj = example_trajectory(calls=[RIGHT], final_answer=None, status="truncated")
    assert tool_call_validity(traj, TASK) == [0.1]
    assert tool_call_validity(example_trajectory(final_answer=None, status="truncated"), TASK) == []


# ---- tool_progress ----


def test_progress_pays_the_first_turn_that_reaches_the_answer_once():
    traj = example_trajectory(calls=[WRONG, RIGHT, RIGHT, RIGHT], final_answer="391")
    assert tool_progress(traj, TASK) == [0.0, 0.2, 0.0, 0.0, 0.0]
    assert sum(tool_progress(traj, TASK, value=0.5)) == 0.5  # spamming the right call earns it once


def test_a_failed_call_whose_error_text_holds_the_answer_is_no_progress():
    traj = example_trajectory(calls=[tool_call("error: 391 is not allowed", ok=False)], final_answer="391")
    assert tool_progress(traj, TASK) == [0.0, 0.0]


def test_progress_with_a_graded_verifier_pays_each_improvement(monkeypatch):
    grades = {"a": 0.5, "b": 0.3, "c": 1.0}
    monkeypatch.setitem(VERIFIERS, "graded", lambda task, text: grades[text])
    task = example_task(env="graded")
    calls = [tool_call("a"), tool_call("b"), tool_call("c")]
    values = tool_progress(example_trajectory(calls=calls, final_answer="c", env="graded"), task)
    assert values == pytest.approx([0.1, 0.0, 0.1, 0.0])  # 0.2 * 0.5, no progress, 0.2 * (1.0 - 0.5), answer


def test_scorers_return_one_value_per_turn_on_odd_trajectories():
    odd = [
        example_trajectory(final_answer=None, status="truncated"),
        example_trajectory(final_answer=None, status="error"),
        example_trajectory(calls=[parse_error()] * 3, final_answer=None, status="truncated"),
        example_trajectory(final_answer="391"),
    ]
    for traj in odd:
        assert check_invariants(traj) == []
        for name, scorer in PROCESS_SCORERS.items():
            assert len(scorer(traj, TASK, **RewardConfig().process_params(name))) == len(traj.turns), name


# ---- config ----


def test_default_is_off_valid_and_documented():
    cfg = RewardConfig()
    assert cfg.process_weights == {} and cfg.validate() == [] and undocumented(RewardConfig) == []
    assert cfg.shaping_components() == ["format", "tool_use"]
    on = RewardConfig(process_weights=ON)
    assert on.validate() == [] and on.shaping_components() == ["format", "tool_use", "process_mean"]
    assert on.process_params("tool_call_validity") == {"ok": 0.1, "failed": -0.2}


def test_validation_names_every_process_problem_and_the_fix():
    with pytest.raises(ConfigError) as info:
        from_dict(RewardConfig, {"process_weights": {"tool_call_validty": 1.0, "tool_progress": -1.0},
                                 "process_call_failed": 0.1, "process_progress": -0.2, "monitor_window": 2,
                                 "monitor_min_t": -1.0})
    text = str(info.value)
    for needle in ("process_weights.tool_call_validty: unknown process scorer. Did you mean 'tool_call_validity'?",
                   "process_weights.tool_progress: must be a finite number >= 0", "process_call_failed: must be < 0",
                   "process_progress: must be >= 0", "monitor_window: must be an integer >= 3",
                   "monitor_min_t: must be a finite number >= 0"):
        assert needle in text
    assert text.count("Fix:") >= 6


# ---- the reward actor ----


def batch():
    return [
        example_trajectory(calls=[FAILED, RIGHT], final_answer="391", task_id="a"),
        example_trajectory(calls=[WRONG, WRONG], final_answer="381", task_id="a"),
        example_trajectory(final_answer="391", task_id="a"),
    ]


def test_actor_writes_the_weighted_turn_sum_into_turn_reward():
    cfg = RewardConfig(process_weights={"tool_call_validity": 1.0, "tool_progress": 0.5})
    scored = RewardActor(cfg).score_batch(batch(), {"a": TASK})
    # failed call -0.2; right call 0.1 + 0.5 * 0.2; answer 0  |  wrong 0.1, wrong 0.1, answer 0  |  answer 0
    assert [[round(t.reward, 6) for t in traj.turns] for traj in scored] == [[-0.2, 0.2, 0.0], [0.1, 0.1, 0.0], [0.0]]
    first = scored[0].reward_breakdown
    assert first["process_mean"] == pytest.approx(0.0)  # (-0.2 + 0.2 + 0) / 3
    assert first["process_tool_call_validity"] == pytest.approx(-0.1 / 3)
    assert first["process_tool_progress"] == pytest.approx(0.2 / 3)
    assert scored[1].reward_breakdown["process_mean"] == pytest.approx(0.2 / 3)
    # the episode reward is untouched by process rewards
    plain = RewardActor().score_batch(batch(), {"a": TASK})
    assert [t.reward for t in scored] == [t.reward for t in plain]
    assert all(t.reward_breakdown["total"] == t.reward for t in scored)


def test_actor_does_not_mutate_its_input_and_rescoring_is_idempotent():
    trajectories = batch()
    trajectories[0].turns[0].reward = 5.0  # an upstream value: overwritten in the copy, kept in the input
    before = copy.deepcopy(trajectories)
    actor = RewardActor(RewardConfig(process_weights=ON))
    once = actor.score_batch(trajectories, {"a": TASK})
    assert trajectories == before
    assert once[0].turns[0].reward == pytest.approx(-0.2)
    assert actor.score_batch(once, {"a": TASK}) == once


def test_actor_contains_a_process_scorer_error():
    odd = example_trajectory(calls=[RIGHT], final_answer="391", task_id="a")
    odd.tool_calls[0].turn = 7  # a record pointing past the turns
    (scored,) = RewardActor(RewardConfig(process_weights=ON)).score_batch([odd], {"a": TASK})
    assert scored.reward_breakdown["process_tool_call_validity_error"] == 1.0
    assert scored.reward_breakdown["process_tool_progress_error"] == 1.0
    assert [t.reward for t in scored.turns] == [0.0, 0.0]


def test_turn_rewards_survive_parquet_and_reach_the_learners_turn_ends(tmp_path):
    scored = RewardActor(RewardConfig(process_weights=ON)).score_batch(batch(), {"a": TASK})
    back = read_parquet(write_parquet(scored, tmp_path / "step.parquet"))
    assert [[t.reward for t in traj.turns] for traj in back] == \
        [[pytest.approx(t.reward) for t in traj.turns] for traj in scored]
    b = collate(back, pad_id=0)
    offset = len(back[0].prompt_ids) - 1
    assert [r for _, r in b.turn_ends[0]] == pytest.approx([-0.2, 0.3, 0.0])
    assert [e for e, _ in b.turn_ends[0]] == [offset + t.end for t in back[0].turns]


def test_ppo_gae_moves_with_the_turn_reward_on_that_turn_and_before_it_only():
    """PPO path of the learner: collate -> token_rewards(outcome, turn_ends) -> gae. A process reward on the
    first turn changes the advantages of that turn's tokens (and of nothing after it)."""
    traj = example_trajectory(calls=[RIGHT], final_answer="391", task_id="a")  # 2 turns of 4 sampled tokens
    with_reward = dataclasses.replace(traj, turns=[dataclasses.replace(traj.turns[0], reward=0.5), traj.turns[1]])
    advantages = []
    for t in (traj, with_reward):
        b = collate([t], pad_id=0)
        mask = b.loss_mask
        rewards = token_rewards(torch.tensor([1.0]), b.turn_ends, mask)
        adv, _ = gae(rewards, torch.zeros_like(mask), mask, gamma=1.0, lam=1.0)
        advantages.append(adv[mask > 0])
    # gamma = lam = 1, V = 0: A(t) = sum of rewards from t on. Turn 1 tokens: 1 + 0.5; turn 2 tokens: 1.
    torch.testing.assert_close(advantages[0], torch.ones(8))
    torch.testing.assert_close(advantages[1], torch.tensor([1.5] * 4 + [1.0] * 4))
