"""The end-to-end chain (DESIGN.md test budget): SFT warm start -> GRPO under `ray job submit` -> paired eval ->
`jobs.eval` of the trained run, submitted the same way.

The job is the README's main command with a CI-sized step count, submitted to a `ray start --head` cluster. It
warm-starts from the shipped SFT recipe (the session's cached adapter: same recipe hash), evaluates the starting
policy greedily on 128 fixed held-out tasks, trains, evaluates again, and the test asks McNemar's exact test
whether the tasks gained outnumber the tasks lost at p < 0.01. Then `python -m jobs.eval` plays the run's adapter
(on the run's own SFT-merged base) on the same 128 tasks, gated at the SFT start's success, and the test reads its
metrics.json. Numbers over several seeds: docs/training.md; the eval job: docs/evaluation.md.
"""

from __future__ import annotations

import json

import pytest
import yaml

from actors.evaluation import paired
from jobs.checkpoints import latest_checkpoint
from tests.jobs.conftest import REPO, submit

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(3000)]
# The rest is configs/train.yaml (8 steps, lr 1e-3). A 1 GiB KV cache holds a step's 32 episodes and leaves room
# on a 23 GiB machine next to the pytest process and two Ray clusters' daemons.
CI_RUN = ["train.checkpoint_every=3", "rollout.kv_cache_gib=1.0"]
STEPS = yaml.safe_load((REPO / "configs/train.yaml").read_text())["train"]["steps"]


def test_grpo_from_the_sft_warm_start_solves_more_held_out_tasks(release_session_engine, head_cluster, sft_adapter,
                                                                 tmp_path):
    env, address = head_cluster
    run_dir = tmp_path / "run"
    proc = submit(env, address, ["-m", "jobs.train", "--config", "configs/train.yaml", f"run.run_dir={run_dir}",
                                 *CI_RUN], timeout=2300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    print(proc.stdout[-2500:])

    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, STEPS] and evals[0]["tasks"] == 128
    test = paired(evals[0]["solved"], evals[-1]["solved"])
    print(f"held-out greedy success {test['before']} -> {test['after']} of 128: +{test['gained']} -{test['lost']}, "
          f"McNemar p = {test['p_value']:.3g}")
    assert test["after"] > test["before"] and test["p_value"] < 0.01

    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == STEPS and all(h["skipped_update"] == 0 for h in history)
    assert all(h["probe_error"] < 0.002 for h in history)  # every sync verified against the learner
    assert (run_dir / "curves.png").stat().st_size > 0 and len(list((run_dir / "trajectories").iterdir())) == STEPS
    assert latest_checkpoint(run_dir).name == f"step_{STEPS:06d}"

    # The release gate: the trained run through jobs.eval, which must not fall below the SFT start's success.
    eval_dir = tmp_path / "eval"
    proc = submit(env, address, ["-m", "jobs.eval", "--adapter", f"trained={run_dir}",
                                 "--min-success", repr(evals[0]["success"]), "eval.base=false",
                                 f"run.run_dir={eval_dir}", "rollout.kv_cache_gib=1.0"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    trained = metrics["metrics"]["trained"]["all"]
    print(f"jobs.eval: trained success {trained['success']:.1%} (training's own final eval "
          f"{evals[-1]['success']:.1%}), tool-call error rate {trained['tool_call_error_rate']:.1%}")
    assert trained["episodes"] == 128 and metrics["gate"] == {"set": True, "passed": True, "failures": []}
    assert trained["success"] >= evals[0]["success"]
    assert abs(trained["success"] - evals[-1]["success"]) <= 0.05  # same policy, tasks and engine: same numbers
    assert all((eval_dir / name).stat().st_size > 0 for name in ("report.md", "success.png", "episodes.parquet"))
