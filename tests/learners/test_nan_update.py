"""A non-finite update is skipped: a NaN reward reaches the loss as NaN advantages, the gradient norm is not finite,
and ``Learner._step_optimizer`` drops the step, so the adapter and Adam's state stay those of the last good update
and no gradient is left behind; the next good batch then updates normally (``skipped_update`` reports each).

In a training run a NaN or inf reward from the reward actor is caught earlier (actors/scoring.py marks the episode
and leaves its group out of the step, counted); this is the learner's own guard, for whatever else makes a loss
non-finite."""

from __future__ import annotations

import math

import pytest
import torch

from learners.advantages import grpo_advantages, rloo_advantages
from learners.config import LearnerConfig
from learners.learner import Learner
from tests.learners.trajectories import scored_batch

pytestmark = pytest.mark.timeout(600)
CFG = LearnerConfig(lr=1e-3, warmup_steps=1, micro_batch_size=4, kl_coef=0.05)


def _state(learner: Learner) -> dict:
    """Trainable weights and Adam's moments, copied."""
    weights = {name: p.detach().clone() for name, p in learner.model.named_parameters() if p.requires_grad}
    moments = {(i, k): v.clone() if torch.is_tensor(v) else v
               for i, s in learner.optimizer.state_dict()["state"].items() for k, v in s.items()}
    return {"weights": weights, "moments": moments}


def _same(a: dict, b: dict) -> bool:
    return all(a[part].keys() == b[part].keys() and all(
        torch.equal(a[part][k], b[part][k]) if torch.is_tensor(a[part][k]) else a[part][k] == b[part][k]
        for k in a[part]) for part in a)


def test_non_finite_rewards_give_non_finite_group_advantages():
    """inf goes the same way as NaN: inf - inf is NaN in the group mean's centring."""
    for bad in (float("nan"), float("inf"), float("-inf")):
        scores = torch.tensor([bad, 0.0, 1.0, 0.0])
        for advantages in (grpo_advantages(scores, ["a", "a", "b", "b"]),
                           rloo_advantages(scores, ["a", "a", "b", "b"])):
            assert not torch.isfinite(advantages[:2]).any() and torch.isfinite(advantages[2:]).all()


def test_a_nan_reward_skips_the_update_and_keeps_the_last_good_adapter(model_path, tokenizer):
    good = scored_batch(tokenizer)[:4]  # two groups of two
    bad = scored_batch(tokenizer, rewards=(float("nan"), 0.0, 1.0, 0.0))[:4]
    learner = Learner(CFG, model_path, temperature=1.0)
    assert learner.update(good)["skipped_update"] == 0  # Adam's moments exist from here on
    adapter, before = learner.adapter_files(), _state(learner)

    metrics = learner.update(bad)
    assert metrics["skipped_update"] == 1.0
    assert not math.isfinite(metrics["grad_norm"]) and not math.isfinite(metrics["loss"])
    assert learner.adapter_files() == adapter  # byte for byte
    assert _same(_state(learner), before)  # no Adam step: weights and moments untouched
    assert all(p.grad is None for p in learner.params)  # no NaN gradient left for the next step

    metrics = learner.update(good)
    assert metrics["skipped_update"] == 0 and math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert learner.adapter_files() != adapter
    assert all(torch.isfinite(p).all() for p in learner.params)
