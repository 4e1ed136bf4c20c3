"""Evaluate the base model and adapters on one task set, and gate a release on the numbers.

    python -m jobs.eval                      # configs/eval.yaml: base vs the SFT adapter, 128 held-out calculator tasks
    python -m jobs.eval --adapter grpo=runs/grpo-calculator-<time> --min-success 0.6
    python -m jobs.eval --tasks my_tasks.parquet --adapter mine=path/to/adapter eval.base=false
    ray job submit --working-dir . -- python -m jobs.eval --config configs/eval.yaml

Every policy plays every task greedily (eval.temperature 0) through the rollout worker's engine, the episodes are
scored with the reward config (rewards.combine: reward and its breakdown), and the numbers go per policy and env
into <run dir>/report.md with PNG charts, metrics.json, episodes.parquet (one row per episode),
trajectories/<policy>.parquet and transcripts.md. What each number means: docs/evaluation.md.

Exit code: 0 = every gate threshold met (or none set); 1 = a threshold missed (the failing numbers are printed);
2 = bad input (config, task file or adapter: the message names it and the fix).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from actors.trajectory import Trajectory, write_parquet
from envs.tasks import Task
from jobs.eval_config import EVERY_ADAPTER, EvalJobConfig, EvalOptions
from jobs.eval_policies import Policy

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "eval.yaml")
FIRST_VERSION = 1  # adapter version numbers the job gives its policies on a fresh engine


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML eval config (default configs/eval.yaml)")
    parser.add_argument("--adapter", action="append", metavar="NAME=PATH",
                        help="a policy to evaluate (repeatable); replaces eval.adapters of the config. PATH: an "
                             "adapter directory, a training run or checkpoint directory, or sft")
    parser.add_argument("--tasks", metavar="FILE", help="a task file (Parquet or JSONL in the task schema; any envs)")
    parser.add_argument("--min-success", action="append", default=[], metavar="[NAME=]RATE",
                        help="gate: exit 1 when a policy's success rate is below RATE (0-1); without NAME, every "
                             "adapter (gate.min_success)")
    parser.add_argument("--list-fields", action="store_true", help="print every config field with its doc")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. tasks.num_tasks=32")
    return parser.parse_args(argv)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The convenience flags as config overrides (they go first, so explicit overrides win).

    >>> flag_overrides(parse_args(["--adapter", "a=x", "--tasks", "t.jsonl", "--min-success", "0.6",
    ...                            "--min-success", "a=0.7"]))
    ['tasks.path=t.jsonl', 'eval.adapters=["a=x"]', 'gate.min_success.*=0.6', 'gate.min_success.a=0.7']
    """
    out = [f"tasks.path={args.tasks}"] if args.tasks else []
    if args.adapter is not None:
        out.append(f"eval.adapters={json.dumps(args.adapter)}")  # a JSON list is a YAML list
    for item in args.min_success:
        name, _, rate = item.rpartition("=")
        out.append(f"gate.min_success.{name or EVERY_ADAPTER}={rate}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from envs.task_source import load_tasks
    from envs.tasks import TaskFileError
    from jobs.config_loader import config_from_cli
    from jobs.eval_policies import PolicyError, resolve_policies

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cfg, code = config_from_cli(EvalJobConfig, args.config, [*flag_overrides(args), *args.overrides],
                                args.list_fields)
    if cfg is None:
        return code
    try:  # bad inputs fail here, before any actor starts
        tasks = load_tasks(cfg.tasks)
        policies = resolve_policies(cfg.eval, cfg.model.name, max_lora_rank=cfg.rollout.max_lora_rank)
    except (FileNotFoundError, TaskFileError, PolicyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from jobs.config import make_run_dir

    run_dir = make_run_dir(cfg)
    print(f"run directory: {run_dir}", flush=True)
    started = time.perf_counter()
    played, timings = play_all(policies, tasks, cfg)
    summary, failures = write_results(run_dir, played, tasks, cfg, policies, timings=timings,
                                      command=" ".join(["python -m jobs.eval", shlex.join(argv)]).strip(),
                                      wall_s=time.perf_counter() - started)
    print((run_dir / "summary.txt").read_text(), end="")
    print(f"report: {run_dir / 'report.md'}")
    if failures:
        print("gate FAILED:\n" + "\n".join(f"  {line}" for line in failures), file=sys.stderr)
        return 1
    return 0


def play_all(policies: Sequence[Policy], tasks: Sequence[Task], cfg: EvalJobConfig
             ) -> tuple[dict[str, list[Trajectory]], dict[str, float]]:
    """Every policy on every task: one engine per base model (one after the other), its policies in turn."""
    import ray

    from actors.remote import start_rollout_workers
    from cluster.connect import connect
    from cluster.plan import ensure_fits, plan_for
    from jobs.eval_policies import by_base

    connect(cfg.ray)
    placement = ensure_fits(plan_for(cfg.rollout), cfg.ray, hold=("rollout",)).placement
    played, timings = {}, {}
    for base, group in by_base(policies).items():
        print(f"engine on {base}: {', '.join(p.name for p in group)}", flush=True)
        workers = start_rollout_workers(base, cfg.rollout, placement)  # the previous base's bundles, freed
        try:
            for name, (trajectories, wall) in play_policies(workers, group, tasks, cfg.eval).items():
                played[name], timings[name] = trajectories, wall
                print(f"  {name}: {len(trajectories)} episodes in {wall:.0f}s", flush=True)
        finally:
            for worker in workers:
                ray.kill(worker)
    return {p.name: played[p.name] for p in policies}, timings


def play_policies(workers: Sequence, policies: Sequence[Policy], tasks: Sequence[Task], opts: EvalOptions, *,
                  first_version: int = FIRST_VERSION) -> dict[str, tuple[list[Trajectory], float]]:
    """Play ``policies`` (all on the workers' base model) one after the other: name -> (episodes in task order,
    seconds). Adapters get versions from ``first_version`` on; the workers serve the base (version 0) afterwards."""
    import ray

    from actors.adapters import read_adapter_dir

    order = {t.task_id: i for i, t in enumerate(tasks)}
    shards = [list(tasks)[i:: len(workers)] for i in range(len(workers))]
    out = {}
    try:
        for i, policy in enumerate(policies):
            started = time.perf_counter()
            version = 0 if policy.adapter is None else first_version + i
            if policy.adapter is not None:
                files = read_adapter_dir(policy.adapter)
                ray.get([w.load_adapter.remote(version, files) for w in workers])
            ray.get([w.use_version.remote(version) for w in workers])
            refs = [w.run_episodes.remote(shard, samples_per_task=opts.samples_per_task, version=version,
                                          temperature=opts.temperature) for w, shard in zip(workers, shards) if shard]
            episodes = [t for batch in ray.get(refs) for t in batch]
            episodes.sort(key=lambda t: (order[t.task_id], t.sample_index))
            out[policy.name] = (episodes, time.perf_counter() - started)
    finally:  # a shared worker (the tests') goes back to the base; a failure here must not hide the first one
        with contextlib.suppress(Exception):
            ray.get([w.use_version.remote(0) for w in workers])
    return out


def write_results(run_dir: Path, played: Mapping[str, list[Trajectory]], tasks: Sequence[Task],
                  cfg: EvalJobConfig, policies: Sequence[Policy], *, command: str, wall_s: float,
                  timings: Mapping[str, float] | None = None) -> tuple[dict, list[str]]:
    """Score, aggregate, gate and write every output; returns (metrics.json's content, gate failures)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.eval_metrics import check_gate, episode_rows, summarize
    from jobs.eval_report import format_report, plot_charts
    from jobs.summary import format_summary, summarize as batch_summary
    from jobs.transcripts import format_transcripts
    from rewards.reward_actor import RewardActor

    run_dir = Path(run_dir)
    by_id = {t.task_id: t for t in tasks}
    scorer = RewardActor(cfg.reward)
    rows, text, transcripts = [], [], []
    for name, trajectories in played.items():
        scored = scorer.score_batch(trajectories, by_id)
        write_parquet(scored, run_dir / "trajectories" / f"{name}.parquet")
        rows += episode_rows(name, scored, by_id)
        text.append(f"== {name}\n{format_summary(batch_summary(scored, (timings or {}).get(name, 0.0)))}")
        shown = scored[: cfg.eval.transcripts]
        if shown:
            transcripts.append(f"# {name}\n\n{format_transcripts(shown, limit=len(shown))}")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]),
                   run_dir / "episodes.parquet")

    summary = summarize(rows, cfg.eval.baseline_name())
    failures = check_gate(summary, cfg.gate)
    gated = any(cfg.gate.rules().values())
    task_text = (f"`{cfg.tasks.path}` ({len(tasks)} tasks)" if cfg.tasks.path else
                 f"{len(tasks)} generated `{cfg.tasks.env}` tasks (split {cfg.tasks.split}, seed {cfg.tasks.seed})")
    sampling = (f"greedy (temperature 0), {cfg.eval.samples_per_task} episode(s) per task" if
                cfg.eval.temperature == 0 else f"temperature {cfg.eval.temperature}, "
                                               f"{cfg.eval.samples_per_task} episode(s) per task")
    report = format_report(summary, command=command, tasks=f"{task_text}, {sampling}",
                           policies=[p.describe() for p in policies], gate=failures if gated else None,
                           wall_s=wall_s)
    plot_charts(summary, run_dir)
    (run_dir / "report.md").write_text(report)
    (run_dir / "transcripts.md").write_text("\n\n".join(transcripts) or "(eval.transcripts = 0)\n")
    gate_line = ("gate: passed" if not failures else f"gate: FAILED ({len(failures)})") if gated else "gate: none set"
    (run_dir / "summary.txt").write_text("\n".join(text) + f"\n{gate_line}\n")
    metrics = summary | {"command": command, "tasks": task_text, "wall_s": wall_s, "play_s": dict(timings or {}),
                         "sources": {p.name: {"source": p.source, "adapter": p.adapter, "base_model": p.base_model}
                                     for p in policies},
                         "gate": {"set": gated, "passed": not failures, "failures": failures}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, failures


if __name__ == "__main__":
    sys.exit(main())
