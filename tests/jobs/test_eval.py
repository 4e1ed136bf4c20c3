"""jobs.eval: the numbers, report and gate on a fabricated result set (fast), bad input (exit 2, nothing started),
and the real engine playing base vs the SFT adapter on 16 held-out calculator tasks (integration)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from envs.tasks import Task
from jobs import eval as eval_job
from jobs.config_loader import load_config, undocumented
from jobs.eval_config import EvalJobConfig, GateSection
from jobs.eval_metrics import ALL, check_gate, summarize
from jobs.eval_policies import Policy, locate_adapter
from rewards._examples import example_trajectory, parse_error, tool_call

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def _cfg(*overrides: str) -> EvalJobConfig:
    return load_config(EvalJobConfig, None, ["eval.adapters=[]", *overrides])


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", "calculator", "What is 17 * 23?", "391", '{"expression": "17 * 23"}') for i in range(n)]


def _solved(i: int):
    return example_trajectory(calls=[tool_call("391")], final_answer="17 * 23 = 391.", task_id=f"t{i}")


def _failed(i: int):  # an unreadable call, then a failed one, then a wrong answer
    return example_trajectory(calls=[parse_error(), tool_call("error: bad expression", ok=False)],
                              final_answer="It is 390.", task_id=f"t{i}")


def _no_tool(i: int):
    return example_trajectory(final_answer="I think 17 * 23 is 400.", task_id=f"t{i}")


def _fabricated(tmp_path: Path, cfg: EvalJobConfig):
    """10 tasks: base never calls a tool and solves none; `good` solves 8 (loses none); `bad` solves 1."""
    tasks = _tasks(10)
    played = {"base": [_no_tool(i) for i in range(10)],
              "good": [_solved(i) if i < 8 else _failed(i) for i in range(10)],
              "bad": [_solved(i) if i < 1 else _failed(i) for i in range(10)]}
    policies = [Policy("base", "/m", None, "smollm2-135m"), Policy("good", "/m", "/a/good", "good"),
                Policy("bad", "/m", "/a/bad", "bad")]
    tmp_path.mkdir(exist_ok=True)
    return eval_job.write_results(tmp_path, played, tasks, cfg, policies, command="python -m jobs.eval --x",
                                  wall_s=12.0)


def test_numbers_report_and_files_on_a_fabricated_result_set(tmp_path):
    metrics, failures = _fabricated(tmp_path, _cfg())
    assert failures == [] and metrics["gate"] == {"set": False, "passed": True, "failures": []}
    good, bad, base = (metrics["metrics"][n][ALL] for n in ("good", "bad", "base"))
    assert (base["success"], good["success"], bad["success"]) == (0.0, 0.8, 0.1)
    assert base["tool_call_error_rate"] is None and base["mean_turns"] == 1.0
    # good: 8 clean calls + 2 episodes with an unreadable and a failed call = 4 errors of 12 calls
    assert good["tool_call_errors"] == 4 and good["tool_call_error_rate"] == pytest.approx(4 / 12)
    assert good["mean_turns"] == pytest.approx((8 * 2 + 2 * 3) / 10)
    assert good["components"]["outcome"] == pytest.approx(0.8) and good["safety_violation_rate"] is None
    assert good["mean_reward"] == pytest.approx(sum(good["components"][k] * w for k, w in
                                                    {"outcome": 1.0, "format": 0.1, "tool_use": 1.0}.items()))
    paired = metrics["paired"]["good"][ALL]
    assert (paired["gained"], paired["lost"]) == (8, 0) and paired["p_value"] == pytest.approx(2 / 2 ** 8)
    assert metrics["baseline"] == "base" and "base" not in metrics["paired"]

    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Evaluation report") and "python -m jobs.eval --x" in report.split("##")[0]
    assert "| **good** | 80.0% (8/10;" in report and "+8 / -0 (p = 0.0078)" in report and "n/a (no calls)" in report
    assert "| bad | good | calculator | 8/10 | 1/10 | 0 | 7 |" in report  # every pair, later vs earlier
    assert "## Gate" not in report  # no threshold set
    for chart in ("success.png", "reward.png", "behaviour.png"):
        assert (tmp_path / chart).read_bytes()[:4] == b"\x89PNG" and f"]({chart})" in report
    episodes = pq.read_table(tmp_path / "episodes.parquet").to_pylist()
    assert len(episodes) == 30 and {e["policy"] for e in episodes} == {"base", "good", "bad"}
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["good"][ALL]["solved"] == 8
    assert "# good" in (tmp_path / "transcripts.md").read_text()
    assert len(list((tmp_path / "trajectories").glob("*.parquet"))) == 3


def test_gate_names_every_missed_threshold(tmp_path):
    adapters = []
    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
        adapters.append(f"{name}={tmp_path / name}")
    cfg = _cfg(f"eval.adapters={json.dumps(adapters)}", "gate.min_success.*=0.5", "gate.min_success.bad=0.05",
               "gate.max_tool_error_rate.good=0.2", "gate.min_wins_over_baseline.*=2")
    metrics, failures = _fabricated(tmp_path / "out", cfg)
    assert metrics["gate"]["passed"] is False
    assert failures == ["good: tool-call error rate 33.3% (4/12) > max_tool_error_rate 20.0%",
                        "bad: net tasks gained over base +1 (+1 -0) < min_wins_over_baseline 2"]
    assert "**Failed** (exit code 1)" in (tmp_path / "out" / "report.md").read_text()
    relaxed = _cfg("gate.min_success.base=0.0")
    assert check_gate(metrics, relaxed.gate) == []  # base at 0% meets a 0% floor; * never applies to the base


def test_gate_min_success_and_baseline_choice():
    rows = [{"policy": p, "env": env, "task_id": f"{env}{i}", "sample_index": 0, "success": ok, "reward": float(ok),
             "status": "finished", "turns": 2, "tool_calls": 1, "tool_call_errors": 0,
             "safety_violation": (not ok) if env == "support_desk" else None}
            for p, wins in (("sft", 3), ("grpo", 5)) for env in ("calculator", "support_desk")
            for i, ok in enumerate([j < wins for j in range(6)])]
    summary = summarize(rows, "sft")
    assert summary["envs"] == ["calculator", "support_desk"] and list(summary["paired"]) == ["grpo"]
    assert summary["paired"]["grpo"]["support_desk"]["gained"] == 2
    assert summary["metrics"]["grpo"]["support_desk"]["safety_violation_rate"] == pytest.approx(1 / 6)
    assert summary["metrics"]["grpo"]["calculator"]["safety_violation_rate"] is None
    assert summary["metrics"]["grpo"][ALL]["safety_violation_rate"] == pytest.approx(1 / 6)
    assert check_gate(summary, GateSection(min_success={"*": 0.6})) == ["sft: success 50.0% (6/12) < min_success 60.0%"]


def test_bad_input_exits_2_before_anything_starts(tmp_path, capsys):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"task_id": "a", "env": "calculator", "prompt": "2+2?", "answer": 4}\nnot json\n'
                   '{"task_id": "a", "env": "calc", "prompt": "x", "answer": "4"}\n')
    storage = tmp_path / "runs"
    code = eval_job.main(["--tasks", str(bad), "eval.base=true", "eval.adapters=[]", f"run.storage={storage}"])
    err = capsys.readouterr().err
    assert code == 2 and "line 2: not valid JSON" in err and "row 1 (line 3) (task_id 'a'): duplicate" in err
    assert "unknown env 'calc'" in err and "Fix:" in err
    code = eval_job.main(["--adapter", f"x={tmp_path}", "--adapter", "base=sft", "--min-success", "nobody=0.5",
                          f"run.storage={storage}"])
    err = capsys.readouterr().err
    assert code == 2 and "holds no adapter" in err and "'base' is the base model's name" in err
    assert "gate.min_success.nobody: no policy named 'nobody'" in err
    assert not storage.exists()  # nothing was written


def test_a_jsonl_task_file_reads_like_parquet(tmp_path):
    from envs import ENVS, read_tasks, write_tasks

    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task_id": "a", "env": "calculator", "prompt": "2+2?", "answer": 4}\n\n'
                    '{"task_id": "b", "env": "weather", "prompt": "Rain?", "answer": "\\"yes\\"", "meta": {"k": 1}}\n')
    tasks = read_tasks(path, ENVS)
    assert [(t.task_id, t.env, t.answer, t.meta) for t in tasks] == [("a", "calculator", "4", "{}"),
                                                                      ("b", "weather", '"yes"', '{"k": 1}')]
    write_tasks(tasks, tmp_path / "tasks.parquet")
    assert read_tasks(tmp_path / "tasks.parquet", ENVS) == tasks


def test_adapter_locations(tmp_path):
    run = tmp_path / "run"
    adapter = run / "checkpoints" / "step_000002" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter.parent / "step.json").write_text('{"step": 2}')
    (run / "checkpoints" / "latest").write_text("step_000002")
    for spec in (run, adapter.parent, adapter):
        assert locate_adapter(str(spec)) == (adapter.resolve(), run.resolve())


def test_config_is_documented_and_doctests_pass():
    from jobs import eval_config, eval_metrics, eval_policies

    assert undocumented(EvalJobConfig) == []
    for module in (eval_job, eval_config, eval_metrics, eval_policies):
        assert doctest.testmod(module).failed == 0
    assert load_config(EvalJobConfig, REPO / "configs" / "eval.yaml").eval.adapters == ["sft=sft"]


# ---------------------------------------------------------------------------------------------------------------------
# The real engine: the session's rollout worker (LoRA serving, the bare SmolLM2), base vs the SFT adapter.


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_sft_adapter_beats_the_base_model_through_the_engine(rollout_worker, sft_adapter, model_path, tmp_path):
    from envs.task_source import load_tasks
    from jobs.eval_policies import resolve_policies

    cfg = load_config(EvalJobConfig, REPO / "configs" / "eval.yaml",
                      ["tasks.num_tasks=16", f"eval.adapters=[sft={sft_adapter}]", "gate.min_success.sft=0.01"])
    tasks = load_tasks(cfg.tasks)
    policies = resolve_policies(cfg.eval, cfg.model.name, max_lora_rank=16, log=lambda *a: None)
    assert [p.base_model for p in policies] == [str(Path(model_path).resolve())] * 2  # one engine plays both
    played = eval_job.play_policies([rollout_worker], policies, tasks, cfg.eval, first_version=701)
    metrics, failures = eval_job.write_results(
        tmp_path, {name: episodes for name, (episodes, _) in played.items()}, tasks, cfg, policies,
        command="test", wall_s=1.0)
    base, sft = metrics["metrics"]["base"][ALL], metrics["metrics"]["sft"][ALL]
    print(json.dumps({"base": base, "sft": sft}, indent=1))
    assert base["episodes"] == sft["episodes"] == 16
    # the merged-serving run of these 16 tasks (docs/examples/eval_calculator) solved 3 (sft) and 0 (base)
    assert sft["solved"] >= base["solved"] + 2 and sft["tool_calls"] > base["tool_calls"]
    assert failures == [] and metrics["gate"]["passed"]
    for name in ("report.md", "metrics.json", "episodes.parquet", "success.png", "reward.png", "behaviour.png",
                 "transcripts.md", "trajectories/base.parquet", "trajectories/sft.parquet"):
        assert (tmp_path / name).stat().st_size > 0, name
