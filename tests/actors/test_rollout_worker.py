"""The rollout worker with the real vLLM engine and SmolLM2, on the shared local Ray cluster."""

from __future__ import annotations

import pytest

from actors.adapters import checksum
from actors.trajectory import check_invariants, check_rendering, read_parquet, write_parquet
from envs.calculator import generate_tasks
from envs.chat import render
from envs.tasks import Task
from tests.actors.adapters import random_adapter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_trajectory_invariants_on_a_real_batch(ray_cluster, rollout_worker, tokenizer, tmp_path):
    tasks = generate_tasks(6, seed=11, split="val")
    trajs = ray_cluster.get(rollout_worker.run_episodes.remote(tasks, samples_per_task=2))
    assert len(trajs) == 12
    assert sorted((t.task_id, t.sample_index) for t in trajs) == sorted(
        (task.task_id, i) for task in tasks for i in range(2))
    canonical = 0
    for t in trajs:
        assert check_invariants(t) == [], t.task_id
        assert check_rendering(t, tokenizer) == [], t.task_id
        assert t.status in ("finished", "truncated")
        assert t.turns and all(turn.policy_version == 0 for turn in t.turns)
        # prompt tokens are exactly the template's rendering of the system + user messages
        head = render(t.messages[:2], add_generation_prompt=True)
        assert t.prompt_ids == tokenizer.encode(head, add_special_tokens=False)
        canonical += tokenizer.encode(render(t.messages), add_special_tokens=False) == t.prompt_ids + t.completion_ids
    # sampled text occasionally splits non-canonically at T=1; most episodes re-tokenize exactly
    assert canonical >= len(trajs) // 2
    back = read_parquet(write_parquet(trajs, tmp_path / "step.parquet"))
    assert [b.completion_ids for b in back] == [t.completion_ids for t in trajs]
    flat = [lp for t in trajs for lp in t.behavior_logprobs]
    assert [lp for b in back for lp in b.behavior_logprobs] == pytest.approx(flat, abs=1e-6)  # stored as float32


def test_a_turn_larger_than_the_prefill_budget_plays_through(ray_cluster, rollout_worker, tokenizer):
    """32 seeded episodes of ~250 new prompt tokens each (8k > vLLM's 4096-token step budget). With chunked prefill,
    vLLM-CPU died on this ("CPU Generator does not use offset"), so the engine turns chunking off on CPU."""
    words = "apple river stone cloud maple copper violet thunder lantern meadow harbor pepper".split()
    tasks = []
    for i in range(32):
        story = " ".join(words[(i * 7 + k * k) % len(words)] + str((i * 31 + k) % 97) for k in range(80))
        tasks.append(Task(f"long-{i}", "calculator", f"Notes {i}: {story}. What is {100 + i} * 7?", str((100 + i) * 7),
                          '{"expression": "%d * 7"}' % (100 + i)))
    assert min(len(tokenizer.encode(t.prompt)) for t in tasks) > 240
    trajs = ray_cluster.get(rollout_worker.run_episodes.remote(tasks, samples_per_task=1))
    assert len(trajs) == 32 and all(t.status in ("finished", "truncated") for t in trajs)


def test_new_adapter_version_changes_policy_and_is_idempotent(ray_cluster, rollout_worker, model_path, tokenizer):
    get = ray_cluster.get
    task = generate_tasks(1, seed=5, split="test")[0]
    probe = tokenizer.encode(render([{"role": "user", "content": task.prompt},
                                     {"role": "assistant", "content": "Let me compute that step by step."}]),
                             add_special_tokens=False)
    base_lp = get(rollout_worker.prompt_logprobs.remote(probe, 0))
    base_greedy = get(rollout_worker.run_episodes.remote([task], temperature=0.0, version=0))[0]

    files = random_adapter(model_path, rank=8, seed=1)
    try:
        _check_versions(get, rollout_worker, model_path, files, probe, task, base_lp, base_greedy)
    finally:
        get(rollout_worker.use_version.remote(0))  # the worker is shared by the whole session
    assert get(rollout_worker.prompt_logprobs.remote(probe, 0)) == pytest.approx(base_lp, abs=1e-6)


def _check_versions(get, rollout_worker, model_path, files, probe, task, base_lp, base_greedy):
    info = get(rollout_worker.load_adapter.remote(101, files))
    assert info["version"] == 101 and info["checksum"] == checksum(files)
    lp = get(rollout_worker.prompt_logprobs.remote(probe, 101))
    assert max(abs(a - b) for a, b in zip(lp, base_lp)) > 0.1
    greedy = get(rollout_worker.run_episodes.remote([task], temperature=0.0))[0]
    assert greedy.policy_version == 101
    assert greedy.completion_ids != base_greedy.completion_ids

    again = get(rollout_worker.load_adapter.remote(101, files))  # the same version again: a no-op
    assert again == info
    assert get(rollout_worker.prompt_logprobs.remote(probe, 101)) == pytest.approx(lp, abs=1e-6)
    assert get(rollout_worker.run_episodes.remote([task], temperature=0.0))[0].completion_ids == greedy.completion_ids

    with pytest.raises(Exception, match="already loaded with checksum"):
        get(rollout_worker.load_adapter.remote(101, random_adapter(model_path, rank=8, seed=2)))

    # newer versions push idle old ones out (keep_versions=2); the base model is always there
    get(rollout_worker.load_adapter.remote(102, random_adapter(model_path, rank=8, seed=3)))
    info = get(rollout_worker.load_adapter.remote(103, random_adapter(model_path, rank=8, seed=4)))
    assert info["version"] == 103 and 103 in info["resident"] and 101 not in info["resident"]
    assert len(info["resident"]) <= 2  # keep_versions
    with pytest.raises(Exception, match="not loaded"):
        get(rollout_worker.prompt_logprobs.remote(probe, 101))
    assert get(rollout_worker.use_version.remote(0))["checksum"] == "base"


def test_adapter_rank_over_engine_limit_is_refused(ray_cluster, rollout_worker, model_path):
    with pytest.raises(Exception, match="max_lora_rank"):
        ray_cluster.get(rollout_worker.load_adapter.remote(150, random_adapter(model_path, rank=32)))
    assert ray_cluster.get(rollout_worker.serving.remote())["version"] == 0
