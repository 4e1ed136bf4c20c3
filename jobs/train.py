"""RL training of a tool-using agent: rollout -> reward -> update -> verified sync -> log/checkpoint.

    python -m jobs.train                                     # configs/train.yaml: local Ray, CPU, SmolLM2, GRPO
    python -m jobs.train --config configs/train_grpo.yaml train.steps=4
    python -m jobs.train --resume run.run_dir=runs/<run>     # continue from the run's latest checkpoint, with its
                                                             # own config.yaml unless --config names another
    ray job submit --working-dir . -- python -m jobs.train --config configs/train.yaml

Shape (docs/design.md, "Who owns the loop"): the learner group is Ray Train (`TorchTrainer`: process group,
checkpoints, restarts), and `train_loop` below is the loop each learner worker runs. The rollout pool (vLLM
workers + reward actor) is an actor outside the trainer, so a learner restart loses no in-flight episodes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from actors.evaluation import paired, success_by_kind
from actors.remote import judge_for, start_reward_actor, start_rollout_pool, start_rollout_workers
from actors.task_order import TaskCursor, resume_mismatch, strata_for
from cluster.connect import connect
from cluster.plan import ensure_fits, plan_for
from envs.task_source import kinds_of, load_tasks
from jobs.checkpoints import checkpoint_cursor, checkpoint_step, latest_checkpoint, load_checkpoint, save_checkpoint
from jobs.config import RunConfig, make_run_dir
from jobs.config_loader import ConfigError, config_from_cli, from_dict, parse_overrides, to_dict
from jobs.metrics import MetricsLog, step_line
from jobs.rollout import parse_args
from jobs.summary import summarize
from jobs.warm_start import warm_started_model
from rewards.monitor import hacking_report, hacking_warning, reward_stats

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "train.yaml")


def config_path(config: str | None, resume: bool, overrides: list[str]) -> str:
    """The config file to load: ``--config`` when given; else, with ``--resume``, the run's own ``config.yaml`` (as
    it was started, overrides included), so ``--resume run.run_dir=runs/<run>`` continues that run and not the
    default config's; else configs/train.yaml. ``--resume`` with neither ``--config`` nor a run directory that
    holds a config.yaml is refused (ConfigError): a mistyped path would otherwise start a fresh default run.

    >>> config_path("my.yaml", True, ["run.run_dir=/nowhere"]), config_path(None, False, []) == DEFAULT_CONFIG
    ('my.yaml', True)
    >>> config_path(None, True, ["run.run_dir=/nowhere"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    jobs.config_loader.ConfigError: invalid config (1 problem):
      - --resume run.run_dir=/nowhere: no config.yaml there, so it is not a run directory ... Fix: ...
    """
    if config or not resume:
        return config or DEFAULT_CONFIG
    try:  # the overrides as config_from_cli reads them: YAML values, the last one wins
        run = parse_overrides(overrides).get("run")
    except ConfigError:
        return DEFAULT_CONFIG  # config_from_cli names the bad override
    run_dir = run.get("run_dir") if isinstance(run, dict) else None
    if not run_dir:
        raise ConfigError(["--resume without run.run_dir: nothing names the run to continue. Fix: add "
                           "run.run_dir=runs/<run> (the run's config.yaml is loaded from it)"])
    if not (Path(str(run_dir)) / "config.yaml").is_file():
        raise ConfigError([f"--resume run.run_dir={run_dir}: no config.yaml there, so it is not a run directory (a run "
                           "writes its config.yaml when it starts). Fix: give the run's directory "
                           "(runs/<name>-<time>), or name its config with --config"])
    return str(Path(str(run_dir)) / "config.yaml")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, resume=True)
    try:
        path = config_path(args.config, args.resume, args.overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    cfg, code = config_from_cli(RunConfig, path, args.overrides, args.list_fields)
    if cfg is None:
        return code
    if cfg.training_problems():
        print(ConfigError(cfg.training_problems()), file=sys.stderr)
        return 2
    tasks = load_tasks(cfg.tasks)
    strata = strata_for(kinds_of(tasks), cfg.train.stratify_kinds)  # before any actor starts: fails fast
    resume_from = latest_checkpoint(Path(cfg.run.run_dir).resolve()) if args.resume and cfg.run.run_dir else None
    cursor = TaskCursor(len(tasks), cfg.tasks.seed, strata=strata)  # the order this run would play
    if resume_from and (problem := resume_mismatch(checkpoint_cursor(resume_from), cursor)):
        print(f"--resume {resume_from}: {problem}", file=sys.stderr)  # before the run's config.yaml is rewritten
        return 2
    run_dir = make_run_dir(cfg)
    print(f"run directory: {run_dir}" + (f" (resuming from {resume_from})" if resume_from else ""))

    # Plan and start the actors: rollout pool outside the learner group ------------------------------------
    connect(cfg.ray)
    # Fails in seconds naming what is missing; holds the rollout workers', reward actor's and pool's bundles for the run
    placement = ensure_fits(plan_for(cfg.rollout, cfg.learner, reward=True), cfg.ray,
                            hold=("rollout", "reward", "pool")).placement
    model_path = warm_started_model(cfg.train.init_adapter, cfg.model.name)  # SFT once, merged into the base
    rollout = serving_for_mode(cfg)
    workers = start_rollout_workers(model_path, rollout, placement)
    judge = judge_for(cfg.reward, rollout, workers)  # reward.judge: none, the rollout engine's base, or its own actor
    pool = start_rollout_pool(workers, start_reward_actor(cfg.reward, judge=judge, placement=placement), tasks,
                              tasks_per_step=cfg.train.tasks_per_step,
                              seed=cfg.tasks.seed, strata=strata, engine_dtype=rollout.dtype,
                              out_dir=str(run_dir / "trajectories"), respawn=(model_path, rollout),
                              reward_cfg=cfg.reward, judge=judge, max_staleness=cfg.train.max_staleness,
                              last_step=cfg.train.steps - 1, placement=placement,
                              placement_timeout_s=cfg.ray.placement_timeout_s)

    # The learner group ------------------------------------------------------------------------------------
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": to_dict(cfg), "model_path": model_path, "pool": pool, "run_dir": str(run_dir),
                           "resume_from": str(resume_from) if resume_from else None,
                           "eval_tasks": load_tasks(cfg.eval.tasks) if cfg.eval.every >= 0 else []},
        scaling_config=ScalingConfig(num_workers=cfg.learner.num_workers, use_gpu=cfg.learner.use_gpu,
                                     resources_per_worker={"CPU": cfg.learner.num_cpus_per_worker}),
        run_config=TrainRunConfig(name="learner", storage_path=str(run_dir / "ray_train"),
                                  failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                                  checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    started = time.perf_counter()
    trainer.fit()
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    _report(history, run_dir, time.perf_counter() - started)
    return 0


def serving_for_mode(cfg: RunConfig):
    """The rollout config the workers run: async mode serves several adapter versions at once, so ``auto``
    adapter serving means LoRA there (merged serving is rejected by the config check)."""
    if cfg.train.mode == "async" and cfg.rollout.adapter_serving == "auto":
        return replace(cfg.rollout, adapter_serving="lora")
    return cfg.rollout


def train_loop(config: dict) -> None:
    """Runs in every learner worker (Ray Train). Rank 0 also syncs, logs and checkpoints."""
    import ray
    import ray.train

    from learners.learner import Learner
    from learners.sync import choose_probe, push_adapter

    cfg: RunConfig = from_dict(RunConfig, config["cfg"])
    pool, run_dir = config["pool"], Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    learner = Learner(cfg.learner, config["model_path"], temperature=cfg.rollout.temperature, rank=rank,
                      world_size=world)
    start = 0
    restart = ray.get(pool.served_a_learner.remote())  # the pool outlived a learner group that died
    source = _resume_source(ray.train.get_checkpoint(), config["resume_from"], run_dir, restart)
    if source:
        start = load_checkpoint(source, learner, pool if rank == 0 else None)
    elif restart and rank == 0:  # died before its first checkpoint: the task cursor goes back to the start
        ray.get(pool.load_cursor_state.remote({"position": 0, "seed": cfg.tasks.seed, "adapter_checksum": "base"}))
    if (source or restart) and rank == 0:  # the workers may serve another adapter: serve exactly this learner's
        push_adapter(learner, pool)
        print(f"learner {'restarted after a failure' if restart else 'resumed'} from "
              f"{source or 'the start (no checkpoint yet)'} (step {start})", flush=True)
    log = MetricsLog(run_dir, resume_step=start if source else -1) if rank == 0 else None  # drops re-run steps
    reward_history: list[dict] = []  # rank 0: reward_stats per step for the hacking monitor (refills after a resume)
    if rank == 0 and start == 0 and cfg.eval.due(0, cfg.train.steps):
        _evaluate(pool, config["eval_tasks"], 0, run_dir)                 # the starting policy, on held-out tasks

    for step in range(start, cfg.train.steps):
        step_started = time.perf_counter()
        batch, timings = ray.get(pool.get_batch.remote(step))           # rollout + reward (once per step)
        probe = choose_probe(batch, learner) if rank == 0 else None
        metrics = learner.update(batch)                                   # learn (this rank's shard)
        metrics.update(timings)
        checkpoint = None
        if rank == 0:
            metrics.update(_sync_metrics(push_adapter(learner, pool, probe)))  # sync + verify
            metrics.update(_batch_metrics(batch))
            hacking = _hacking_check(batch, reward_history, cfg)
            metrics["reward_hacking_flag"] = float(hacking["flag"])
            metrics["step"], metrics["step_s"] = step + 1, time.perf_counter() - step_started
            log.write(metrics)
            print(step_line(metrics, cfg.train.steps), flush=True)
            if hacking["flag"]:
                print(hacking_warning(hacking), flush=True)
            if cfg.eval.due(step + 1, cfg.train.steps):
                _evaluate(pool, config["eval_tasks"], step + 1, run_dir)
            if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == cfg.train.steps:
                checkpoint = save_checkpoint(run_dir, step + 1, learner, ray.get(pool.cursor_state.remote()))
            if step + 1 < cfg.train.steps:
                _resize_pool(pool, run_dir, cfg)
        _report_to_ray_train(metrics, checkpoint)


def _resume_source(restored, resume_from: str | None, run_dir: Path, restart: bool) -> Path | None:
    """The checkpoint to start from: the newest of Ray Train's (``restored``, set when FailureConfig restarted the
    group), the one ``--resume`` named, and, on a restart, the run's own latest. Ray Train registers a reported
    checkpoint only when its controller next polls the worker, so a learner killed right after a save restarts from
    the previous one there; the run directory has the newest complete checkpoint (jobs/checkpoints.py)."""
    candidates = [Path(p) for p in (restored.to_directory() if restored else None, resume_from) if p]
    if restart and (ours := latest_checkpoint(run_dir)) is not None:
        candidates.append(ours)
    return max(candidates, key=checkpoint_step) if candidates else None


def _resize_pool(pool, run_dir: Path, cfg: RunConfig) -> None:
    """Elastic rollout pool between steps (jobs/elastic.py): by hand, or onto room the autoscaler added."""
    import ray

    from jobs.elastic import CONTROL_FILE, desired_workers

    if not (cfg.rollout.max_workers or (run_dir / CONTROL_FILE).exists()):
        return
    current = len(ray.get(pool.serving.remote()))
    wanted = desired_workers(run_dir, current, cfg.rollout, ray.available_resources())
    if wanted != current:
        served = ray.get(pool.resize.remote(wanted))
        print(f"rollout pool: {current} -> {len(served)} workers, serving versions "
              f"{sorted({s['version'] for s in served})}", flush=True)


def _evaluate(pool, tasks: list, step: int, run_dir: Path) -> None:
    """Greedy held-out evaluation of the policy served now; one line per evaluation in eval.jsonl."""
    import ray

    result = ray.get(pool.evaluate.remote(tasks, name=f"step_{step:05d}")) | {"step": step}
    with open(run_dir / "eval.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"eval after {step} steps: success {result['success']:.1%} on {result['tasks']} held-out tasks "
          f"(valid first call {result['valid_first_call']:.1%}, {result['eval_s']:.0f}s)"
          + "".join(f"; {k} {v:.0%}" for k, v in result.get("success_by_kind", {}).items()), flush=True)


def _sync_metrics(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "checksum"} | {"adapter_checksum": report["checksum"]}


def _batch_metrics(batch) -> dict:
    """Headline numbers (sampled success per task kind too, ``success/<kind>``) and every reward component's batch
    mean (``reward/<key>``) and std/min/max (``reward/<key>/std`` ...), process rewards included
    (``reward/process_mean``, ``reward/turn_reward``)."""
    summary = summarize(batch, wall_s=1.0)
    out = {"reward": summary["mean_reward"], "success": summary["success_rate"],
           "tool_call_ok": summary["tool_call_success_rate"], "turns": summary["mean_turns"],
           "sampled_tokens": summary["sampled_tokens"]}
    out |= {f"success/{kind}": rate for kind, rate in success_by_kind(batch).items()}
    for key, value in reward_stats(batch).items():
        if key != "count":
            component, stat = key.rsplit("/", 1)
            out[f"reward/{component}" if stat == "mean" else f"reward/{key}"] = value
    return out


def _hacking_check(batch, history: list[dict], cfg: RunConfig) -> dict:
    """Append this step's reward stats and run the reward-hacking monitor (``rewards.monitor.hacking_report``)."""
    history.append(reward_stats(batch))
    del history[:-cfg.reward.monitor_window]
    return hacking_report(history, window=cfg.reward.monitor_window, min_change=cfg.reward.monitor_min_change,
                          min_t=cfg.reward.monitor_min_t, shaping=cfg.reward.shaping_components())


def _report_to_ray_train(metrics: dict, checkpoint: Path | None) -> None:
    import ray.train

    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if checkpoint is None:
        ray.train.report(numeric)
    else:
        ray.train.report(numeric, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)))


def _report(history: list[dict], run_dir: Path, wall_s: float) -> None:
    from jobs.metrics import plot_curves, time_breakdown

    plot_curves(history, run_dir / "curves.png")
    first, last = history[0], history[-1]
    print(f"reward {first['reward']:.3f} -> {last['reward']:.3f}, success {first['success']:.1%} -> "
          f"{last['success']:.1%} over {len(history)} steps in {wall_s / 60:.1f} min")
    print(time_breakdown(history))
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()] \
        if (run_dir / "eval.jsonl").exists() else []
    if len(evals) >= 2:
        test = paired(evals[0]["solved"], evals[-1]["solved"])
        print(f"held-out greedy success {test['before']}/{test['tasks']} -> {test['after']}/{test['tasks']} "
              f"(steps {evals[0]['step']} -> {evals[-1]['step']}; {test['gained']} tasks gained, {test['lost']} lost, "
              f"McNemar p = {test['p_value']:.2g})")
    print(f"outputs: {run_dir} (metrics.jsonl, tensorboard/, trajectories/, checkpoints/, curves.png)")


if __name__ == "__main__":
    sys.exit(main())
