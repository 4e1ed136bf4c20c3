"""Truncated importance sampling in the learner: with vLLM's behavior logprobs far below the learner's, every token's
weight min(pi_old / mu, cap) is the cap, the update is the cap times the uncorrected one, and the weights are logged."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from learners.config import LearnerConfig
from learners.learner import Learner
from tests.learners.trajectories import scored_batch

pytestmark = pytest.mark.timeout(300)
# adam_eps >> |grad|: the first Adam step is ~ lr * grad / eps, linear in the gradient (tests/learners/test_learner.py)
CFG = LearnerConfig(lr=1.0, warmup_steps=1, micro_batch_size=2, kl_coef=0.0, adam_eps=1.0)
CAP = 2.0


def _lora_delta(cfg: LearnerConfig, model_path: str, batch) -> tuple[dict[str, torch.Tensor], dict]:
    learner = Learner(cfg, model_path, temperature=1.0)
    before = {k: v.clone() for k, v in learner.model.state_dict().items() if "lora_" in k}
    metrics = learner.update(batch)
    return {k: v - before[k] for k, v in learner.model.state_dict().items() if "lora_" in k}, metrics


def test_truncated_weights_scale_the_update_and_are_logged(model_path, tokenizer):
    # mu far below pi_old (a stale sampler): pi_old / mu = e^40 on every token, truncated to the cap
    batch = [replace(t, behavior_logprobs=[-40.0] * t.num_sampled) for t in scored_batch(tokenizer)]
    plain, plain_metrics = _lora_delta(CFG, model_path, batch)
    corrected, metrics = _lora_delta(replace(CFG, tis_cap=CAP), model_path, batch)
    assert "tis_weight_mean" not in plain_metrics
    assert metrics["tis_weight_mean"] == pytest.approx(CAP) and metrics["tis_truncated_frac"] == pytest.approx(1.0)
    moved = [k for k, d in plain.items() if d.abs().max() > 0]
    assert moved, "the uncorrected update moved nothing: the comparison would be empty"
    for k in moved:
        torch.testing.assert_close(corrected[k], CAP * plain[k], rtol=2e-2, atol=1e-7)


def test_tis_cap_below_one_is_rejected():
    assert any("tis_cap" in p and "Fix" in p for p in replace(CFG, tis_cap=0.5).validate())
