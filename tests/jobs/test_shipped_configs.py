"""Every YAML file in configs/ loads into its job's config and passes that job's checks: a config we ship must not
fail at a user's first command."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import RunConfig
from jobs.config_loader import load_config
from jobs.eval_config import EvalJobConfig
from jobs.serve_config import ServeConfig
from jobs.train_reward_model import TrainRewardModelConfig
from jobs.warm_start import check_init_adapter, recipe_path
from learners.sft import SFTConfig

pytestmark = pytest.mark.timeout(60)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def job_config(path: Path) -> type:
    if path.name.startswith("sft"):
        return SFTConfig
    if path.name.startswith("reward_model"):
        return TrainRewardModelConfig
    if path.name.startswith("eval"):
        return EvalJobConfig
    if path.name.startswith("serve"):
        return ServeConfig
    return RunConfig


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(job_config(path), path)  # raises ConfigError listing every problem
    if isinstance(cfg, RunConfig) and path.name.startswith("train"):
        assert cfg.training_problems() == []
        assert check_init_adapter(cfg.train.init_adapter) == []
        recipe = recipe_path(cfg.train.init_adapter) if cfg.train.init_adapter else None
        if recipe is not None:  # the warm start it names is a valid SFT recipe for the same env
            sft = load_config(SFTConfig, recipe)
            assert sft.env == cfg.tasks.env, (sft.env, cfg.tasks.env)


def test_there_are_configs_for_every_job():
    assert {job_config(p) for p in CONFIGS} == {RunConfig, SFTConfig, TrainRewardModelConfig, EvalJobConfig,
                                                ServeConfig}
