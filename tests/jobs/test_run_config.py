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


def test_training_problems_catch_process_rewards_that_would_change_nothing():
    assert from_dict(RunConfig, {}).training_problems() == []
    single = from_dict(RunConfig, {"rollout": {"samples_per_task": 1}}).training_problems()
    assert len(single) == 1 and "samples_per_task=4" in single[0]
    unread = from_dict(RunConfig, {"reward": {"process_weights": {"tool_call_validity": 1.0}}}).training_problems()
    assert len(unread) == 1 and "process_reward_mode=add" in unread[0] and "tool_call_validity" in unread[0]
    logged_only = {"reward": {"process_weights": {"tool_call_validity": 0.0}}}
    assert from_dict(RunConfig, logged_only).training_problems() == []
    empty = from_dict(RunConfig, {"learner": {"process_reward_mode": "add"}}).training_problems()
    assert len(empty) == 1 and "no reward.process_weights" in empty[0]
    turn_empty = from_dict(RunConfig, {"learner": {"process_reward_mode": "turn"}}).training_problems()
    assert len(turn_empty) == 1 and "'turn' but no reward.process_weights" in turn_empty[0]
    ppo = {"learner": {"algo": "ppo"}, "reward": {"process_weights": {"tool_progress": 1.0}}}
    assert from_dict(RunConfig, ppo).training_problems() == []  # PPO reads Turn.reward in GAE
    for mode in ("add", "turn"):
        both = {"learner": {"process_reward_mode": mode}, "reward": {"process_weights": {"tool_progress": 1.0}}}
        assert from_dict(RunConfig, both).training_problems() == []


def test_async_mode_rules_name_every_problem_and_fix():
    with pytest.raises(ConfigError, match="max_staleness: 2 but mode is sync"):
        load_config(RunConfig, None, ["train.max_staleness=2"])
    with pytest.raises(ConfigError, match="async mode needs >= 1"):
        load_config(RunConfig, None, ["train.mode=async"])
    cfg = load_config(RunConfig, None, ["train.mode=async", "train.max_staleness=2", "rollout.adapter_serving=merged"])
    problems = cfg.training_problems()
    assert len(problems) == 4 and all("Fix:" in p for p in problems), problems
    text = "\n".join(problems)
    assert "'merged' holds one adapter version" in text and "rollout.max_loras=3" in text
    assert "rollout.keep_versions=3" in text and "learner.tis_cap=2.0" in text
    ok = load_config(RunConfig, "configs/train_async.yaml")
    assert ok.train.mode == "async" and ok.training_problems() == []
