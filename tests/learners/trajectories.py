"""Test helper: real trajectories (real tokenizer and runner) with chosen completions, rewards and groups."""

from __future__ import annotations

from dataclasses import replace

from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, run_episodes
from envs.calculator import generate_tasks
from tests.actors.test_episode import CALL, ScriptedBackend

SCRIPTS = [
    [CALL % "17*23", "17 * 23 = 391."],
    ["The answer is 12."],
    [CALL % "5+5", CALL % "10*3", "It is 30, computed with the calculator in two careful steps."],
    ["I think it is probably 7."],
    [CALL % "2*21", "42."],
    ["Roughly 1000, give or take a little, as far as I can tell."],
]


def scored_batch(tokenizer, rewards=(1.0, 0.0, 1.0, 0.0, 0.5, 0.0)) -> list:
    """Six episodes of uneven length in three groups of two, with the given rewards."""
    tasks = generate_tasks(3, seed=9)
    specs = [EpisodeSpec(tasks[i // 2], sample_index=i % 2, group_id=tasks[i // 2].task_id) for i in range(6)]
    backend = ScriptedBackend(tokenizer, SCRIPTS)
    trajs = run_episodes(backend, tokenizer, specs, RolloutConfig(max_tokens_per_turn=64), version=0)
    return [replace(t, reward=r, behavior_logprobs=[-1.0] * t.num_sampled) for t, r in zip(trajs, rewards)]
