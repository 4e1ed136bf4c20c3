"""The composed run config: defaults valid, every bad field reported at once with its fix, saved per run."""

from __future__ import annotations

import pytest

from jobs.config import RunConfig, make_run_dir
from jobs.config_loader import ConfigError, from_dict, load_config, undocumented


def test_defaults_are_valid_and_documented():
    cfg = from_dict(RunConfig, {})
    assert cfg.model.name == "smollm2-135m" and cfg.rollout.top_p == 1.0
    assert undocumented(RunConfig) == []


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, {"rollout": {"temperature": 0, "max_lora_rank": 12, "max_total_tokens": 4096,
                                          "max_turns": "three"},
                              "tasks": {"env": "chess", "num_tasks": 0}, "modle": {}})
    text = str(err.value)
    for needle in ("rollout.max_turns", "tasks.env", "tasks.num_tasks", "modle: unknown key. Did you mean model"):
        assert needle in text
    # the rollout section had a type error, so its validate() must not run on half-typed values
    assert "rollout.temperature" not in text
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, {"rollout": {"temperature": 0, "max_lora_rank": 12, "max_total_tokens": 4096}})
    text = str(err.value)
    assert "rollout.temperature: must be > 0" in text and "Fix:" in text
    assert "rollout.max_lora_rank: vLLM accepts" in text and "rollout.max_total_tokens" in text
    assert "learner.lora.rank: 16 exceeds rollout.max_lora_rank 12" in text  # cross-section check
    assert len(err.value.problems) == 4


def test_resolved_config_saved_in_run_dir(tmp_path):
    cfg = load_config(RunConfig, None, [f"run.storage={tmp_path}", "rollout.temperature=0.7"])
    run_dir = make_run_dir(cfg)
    assert run_dir.parent == tmp_path.resolve()
    assert load_config(RunConfig, run_dir / "config.yaml") == cfg
