"""train.init_adapter: the SFT recipe spec, adapter directories, and the errors for anything else."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.config import EvalSection, TrainSection
from jobs.warm_start import DEFAULT_RECIPE, check_init_adapter, demos_digest, recipe_path, warm_start_adapter
from learners.sft import SFTConfig


def test_specs_resolve_to_recipes_or_directories(tmp_path):
    assert recipe_path("sft") == DEFAULT_RECIPE and DEFAULT_RECIPE.is_file()
    assert recipe_path("sft:my/recipe.yaml") == DEFAULT_RECIPE.parents[1] / "my" / "recipe.yaml"  # from the root
    assert recipe_path(str(tmp_path)) is None
    assert warm_start_adapter(None, "smollm2-135m") is None
    (tmp_path / "adapter_config.json").write_text("{}")
    assert warm_start_adapter(str(tmp_path), "smollm2-135m") == str(tmp_path.resolve())
    assert check_init_adapter(str(tmp_path)) == [] and check_init_adapter("sft") == []


def test_the_cache_key_follows_the_demonstrations_not_only_the_recipe(tmp_path, monkeypatch):
    """A changed env prompt (or tool schema, or expert) must retrain the cached warm start: the same recipe file
    over other demo text is another adapter."""
    import envs.support_desk as support_desk

    cfg = SFTConfig(env="support_desk", num_demos=4)
    before = demos_digest(cfg)
    assert demos_digest(cfg) == before  # deterministic
    monkeypatch.setitem(support_desk.AGENT_PROMPTS, "support", support_desk.AGENT_PROMPTS["support"] + " Be brief.")
    assert demos_digest(cfg) != before
    path = tmp_path / "demos.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}]}\n')
    from_file = demos_digest(SFTConfig(demos_path=str(path)))
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}]}\n')
    assert demos_digest(SFTConfig(demos_path=str(path))) != from_file


def test_an_sft_run_whose_overrides_change_the_recipe_is_not_the_recipes_warm_start(tmp_path, monkeypatch):
    from dataclasses import replace

    from jobs.config_loader import load_config
    from jobs.warm_start import publish_warm_start, recipe_cache_dir

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("num_demos: 4\ncheck_tasks: 2\n")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cfg = load_config(SFTConfig, recipe)
    assert publish_warm_start(recipe, replace(cfg, lr=1e-5), adapter, {}) is None
    assert not (tmp_path / "cache").exists()
    # the greedy check and the output directory do not change the adapter; another model is its own entry
    assert recipe_cache_dir(recipe, replace(cfg, check_tasks=0, out_dir="x")) == recipe_cache_dir(recipe, cfg)
    other = publish_warm_start(recipe, replace(cfg, model="other-model"), adapter, {"steps": [1]})
    assert other == recipe_cache_dir(recipe, replace(cfg, model="other-model")) != recipe_cache_dir(recipe, cfg)
    assert str(adapter) in (other / "DONE").read_text() and (other / "adapter_config.json").exists()
    assert json.loads((other / "sft_metrics.json").read_text()) == {}


def test_bad_specs_name_the_fix(tmp_path):
    (problem,) = check_init_adapter(str(tmp_path))  # a directory without an adapter in it
    assert "adapter_config.json" in problem and "jobs.sft" in problem
    (problem,) = check_init_adapter("sft:nope.yaml")
    assert "nope.yaml" in problem and "configs/sft.yaml" in problem
    assert TrainSection(init_adapter="sft:nope.yaml").validate()


def test_a_relative_recipe_is_found_from_another_working_directory(tmp_path, monkeypatch):
    """Ray Train runs the learner in a directory of its own: ``sft:configs/...`` must still name the shipped file
    (the support-desk run failed its config check there)."""
    monkeypatch.chdir(tmp_path)
    assert recipe_path("sft:configs/sft_support_desk.yaml") == DEFAULT_RECIPE.parent / "sft_support_desk.yaml"
    assert check_init_adapter("sft:configs/sft_support_desk.yaml") == []
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sft_support_desk.yaml").write_text("sft: {}\n")
    assert recipe_path("sft:configs/sft_support_desk.yaml") == Path("configs/sft_support_desk.yaml")  # cwd first
    assert "not found" in check_init_adapter("sft:configs/nope.yaml")[0]


def test_eval_is_due_at_start_end_and_every_n():
    assert [s for s in range(7) if EvalSection().due(s, 6)] == [0, 6]
    assert [s for s in range(7) if EvalSection(every=2).due(s, 6)] == [0, 2, 4, 6]
    assert not any(EvalSection(every=-1).due(s, 6) for s in range(7))
