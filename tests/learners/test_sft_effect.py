"""The SFT warm start, served by the real vLLM engine: valid tool calls on held-out tasks go from ~0 to a majority."""

from __future__ import annotations

import pytest

from actors.adapters import read_adapter_dir
from envs.calculator import generate_tasks
from jobs.summary import summarize

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _valid_call_rate(trajs) -> float:
    """Share of episodes whose first call was strictly valid and ran (the format SFT teaches)."""
    first = [next((c for c in t.tool_calls if c.turn == 0), None) for t in trajs]
    return sum(bool(c and c.ok and c.strict) for c in first) / len(trajs)


def test_sft_adapter_makes_the_model_call_the_tool(ray_cluster, rollout_worker, sft_adapter):
    get = ray_cluster.get
    tasks = generate_tasks(24, seed=7, split="test")  # held out: the SFT demos come from the train split
    base = get(rollout_worker.run_episodes.remote(tasks, samples_per_task=1, temperature=0.0, version=0))
    get(rollout_worker.load_adapter.remote(301, read_adapter_dir(sft_adapter)))
    try:
        tuned = get(rollout_worker.run_episodes.remote(tasks, samples_per_task=1, temperature=0.0, version=301))
    finally:
        get(rollout_worker.use_version.remote(0))
    before, after = _valid_call_rate(base), _valid_call_rate(tuned)
    print(f"valid first-turn tool calls: base {before:.0%} -> SFT {after:.0%}; task success: base "
          f"{summarize(base, 1)['success_rate']:.0%} -> SFT {summarize(tuned, 1)['success_rate']:.0%}")
    assert before <= 0.1 and after >= 0.6
