"""Play episodes with the current policy and write them to Parquet with a readable summary.

    python -m jobs.rollout                                   # configs/rollout.yaml: local Ray, CPU, SmolLM2, 32 tasks
    python -m jobs.rollout --config configs/rollout.yaml tasks.num_tasks=64 rollout.temperature=0.7
    python -m jobs.rollout --env support_desk                # configs/rollout_support_desk.yaml if it exists
    ray job submit --working-dir . -- python -m jobs.rollout --config configs/rollout.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from actors.remote import start_rollout_workers
from actors.trajectory import write_parquet
from cluster.connect import connect
from cluster.model import resolve_model
from cluster.plan import ensure_fits, plan_for
from envs.task_source import load_tasks
from jobs.config import RunConfig, make_run_dir
from jobs.config_loader import config_from_cli
from jobs.summary import format_summary, summarize
from jobs.transcripts import format_transcripts

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "rollout.yaml")


def parse_args(argv: list[str] | None, doc: str, default_config: str | None = None,
               resume: bool = False, env: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config,
                        help="YAML run config (see configs/); fields not given keep their defaults")
    if env:
        parser.add_argument("--env", help="play this env's tasks (tasks.env=ENV); without --config, "
                            "configs/rollout_ENV.yaml is used when it exists (its context and turn limits)")
    parser.add_argument("--list-fields", action="store_true", help="print every config field with its doc")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="continue the run in run.run_dir from its latest checkpoint")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. rollout.temperature=0.7")
    return parser.parse_args(argv)


def config_and_overrides(env: str | None, config: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """The config file and overrides for ``--env``: the env's own rollout config when there is one (support_desk
    needs a longer context and more turns), else the default; ``tasks.env`` first so later overrides win.

    >>> config_and_overrides("support_desk", None, ["tasks.num_tasks=4"])[0].endswith("rollout_support_desk.yaml")
    True
    >>> config_and_overrides("weather", None, ["tasks.num_tasks=4"])[1]
    ['tasks.env=weather', 'tasks.num_tasks=4']
    >>> config_and_overrides(None, "my.yaml", [])
    ('my.yaml', [])
    """
    if not env:
        return config or DEFAULT_CONFIG, list(overrides)
    own = Path(DEFAULT_CONFIG).with_name(f"rollout_{env}.yaml")
    return config or (str(own) if own.exists() else DEFAULT_CONFIG), [f"tasks.env={env}", *overrides]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, None, env=True)
    config, overrides = config_and_overrides(args.env, args.config, args.overrides)
    cfg, code = config_from_cli(RunConfig, config, overrides, args.list_fields)
    if cfg is None:
        return code
    tasks = load_tasks(cfg.tasks)  # bad task files fail here, before any actor starts
    run_dir = make_run_dir(cfg)
    print(f"run directory: {run_dir}")

    connect(cfg.ray)
    placement = ensure_fits(plan_for(cfg.rollout), cfg.ray, hold=("rollout",)).placement
    model_path = str(resolve_model(cfg.model.name))
    workers = start_rollout_workers(model_path, cfg.rollout, placement)

    import ray

    started = time.perf_counter()
    shards = [tasks[i:: len(workers)] for i in range(len(workers))]
    results = ray.get([w.run_episodes.remote(shard) for w, shard in zip(workers, shards) if shard])
    trajectories = [t for batch in results for t in batch]
    wall = time.perf_counter() - started

    write_parquet(trajectories, run_dir / "trajectories" / "rollout.parquet")
    summary = summarize(trajectories, wall)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    text = format_summary(summary)
    (run_dir / "summary.md").write_text(f"# rollout summary\n\n```\n{text}\n```\n")
    (run_dir / "transcripts.md").write_text(f"# transcripts\n\n{format_transcripts(trajectories)}")
    print(text)
    print(f"trajectories: {run_dir / 'trajectories' / 'rollout.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
