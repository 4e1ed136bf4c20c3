"""P4, end to end against TRL: steps/s and reward after K steps of our `jobs.train` vs TRL's `GRPOTrainer`.

One-time setup of the TRL side (a venv OUTSIDE the repo: TRL pulls a newer transformers than ours, and our
.venv's pinned stack must stay as it is):

    python3.11 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0                  # first and alone: takes the local CPU wheel
    /work/trl-venv/bin/pip install trl==1.16.0 peft datasets      # + transformers, accelerate, pyarrow, jinja2, yaml

Then, from the repo root:

    .venv/bin/python bench/vs_trl.py                              # 3 steps per side, both sides, one after the other
    .venv/bin/python bench/vs_trl.py --steps 2 --tasks-per-step 2 # a quick smoke run
    .venv/bin/python bench/vs_trl.py --sides trl --trl-python /path/to/python

Both sides run the default job (configs/train.yaml): GRPO from the SFT warm start merged into SmolLM2-135M, the same
tasks in the same order (our task cursor's), `tasks_per_step` x `samples_per_task` episodes per step, LoRA rank 16
alpha 32 on every linear layer of the llama blocks, lr 1e-3 with our 2-step warm-up, KL coefficient 0.02 (k3 in the
loss; reference = the adapter switched off), clip 0.2, token-mean loss, micro-batches of 4, temperature 1, up to 3
turns of up to 96 tokens with the calculator tool, fp32, on this machine's CPUs. "ours" is
`python -m jobs.train ... train.steps=K eval.every=-1` (local Ray: a vLLM-CPU rollout worker serving the adapter
merged into its weights, a Ray Train learner). "trl" is bench/trl_grpo_side.py in the TRL venv (PYTHONPATH=repo,
so it uses our calculator, chat template and reward): TRL's multi-turn tool loop (`GRPOTrainer(tools=[...])`, our
calculator as the tool), generation with HF transformers `generate` on CPU (TRL's vLLM modes need CUDA), torch
threads = the machine's cores, a turn ending at "</tool_call>" as ours does (a stop string TRL's HF path cannot
take without the small hand-over in bench/trl_grpo_side.py); `trl-nostop` is TRL without it, as it runs out of the
box. Reward on both sides: our scorers (`rewards.scorers.combine`, the run's RewardConfig), on the TRL side applied
to each completion rebuilt as our Trajectory by our runner's rules.

Not matched, by design of each framework: our learner runs the prompt a group shares once and the LM head on sampled
positions only, TRL's on every position; we merge the adapter into the vLLM weights after each step, TRL's HF
generation runs the unmerged LoRA; HF `generate` runs a batch until its longest member ends (vLLM schedules each
request alone); TRL samples the `>` of "</tool_call>" and trains on the `<|im_end|>` that closes a tool-call turn (there
HF's pad token; ours writes both, mask 0).

The rate is over steps 2..K (step 1 carries the warm-up: first engine calls, allocator, thread pools). Start-up
(Ray, the vLLM engine, model loads) is outside both. Prints a Markdown table, writes bench/results/vs_trl.json
(plus each side's log and per-step records under runs/bench-vs-trl-<time>/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIDES = ("ours", "trl", "trl-nostop")
DEFAULT_SIDES = ("ours", "trl")
TRL_STOP = "</tool_call>"  # our runner stops a turn at "</tool_call" (envs.chat.TOOL_CALL_STOP) and writes ">" itself


def run_config(args):
    from jobs.config import RunConfig
    from jobs.config_loader import load_config

    return load_config(RunConfig, ROOT / args.config, overrides_for(args))


def overrides_for(args) -> list[str]:
    return [f"train.steps={args.steps}", "eval.every=-1", f"train.checkpoint_every={args.steps}",
            *([f"train.tasks_per_step={args.tasks_per_step}"] if args.tasks_per_step else [])]


def task_order(cfg) -> list:
    """The tasks our pool plays, step by step: its task list walked by its seeded cursor."""
    from actors.task_order import TaskCursor
    from envs.task_source import load_tasks

    tasks = load_tasks(cfg.tasks)
    cursor = TaskCursor(len(tasks), cfg.tasks.seed)
    return [tasks[i] for _ in range(cfg.train.steps) for i in cursor.take(cfg.train.tasks_per_step)]


def planned_by_step(order: list, steps: int) -> list[list[str]]:
    per = len(order) // steps
    return [sorted({t.task_id for t in order[i * per:(i + 1) * per]}) for i in range(steps)]


def run_ours(args, out_root: Path, order: list) -> dict:
    run_dir = out_root / "ours"
    cmd = [sys.executable, "-m", "jobs.train", "--config", args.config, f"run.run_dir={run_dir}",
           *overrides_for(args)]
    started = time.perf_counter()
    with open(out_root / "ours.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ours failed ({proc.returncode}); see {out_root / 'ours.log'}:\n"
                         + (out_root / "ours.log").read_text()[-3000:])
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    import pyarrow.parquet as pq

    played = [sorted(set(pq.read_table(run_dir / "trajectories" / f"step_{step:05d}.parquet",
                                       columns=["task_id"]).column("task_id").to_pylist()))
              for step in range(len(history))]
    steps = [{"step": m["step"], "step_s": m["step_s"], "generate_s": m.get("rollout_s"),
              "reward_s": m.get("reward_s"), "learn_s": m.get("learn_s"), "sync_s": m.get("sync_s"),
              "reward": m["reward"], "success": m["success"], "sampled_tokens": m.get("sampled_tokens"),
              "kl": m.get("kl"), "turns": m.get("turns")} for m in history]
    return {"side": "ours", "wall_s": wall, "steps": steps,
            "same_tasks_as_planned": played == planned_by_step(order, len(history)),
            "backend": f"vLLM-CPU {_version('vllm-cpu', 'vllm')} (fp32, adapter merged into the weights)",
            "versions": {"torch": _version("torch"), "transformers": _version("transformers"),
                         "peft": _version("peft"), "ray": _version("ray")}}


def run_trl(args, out_root: Path, cfg, order: list, side: str) -> dict:
    from jobs.config_loader import to_dict
    from jobs.warm_start import warm_started_model

    model_path = warm_started_model(cfg.train.init_adapter, cfg.model.name)
    threads = cfg.learner.cpu_threads or os.cpu_count() or 1  # what our learner uses (learners/learner.py)
    spec = {"model_path": model_path, "steps": cfg.train.steps, "tasks_per_step": cfg.train.tasks_per_step,
            "samples_per_task": cfg.rollout.samples_per_task, "tasks": [dataclasses.asdict(t) for t in order],
            "lr": cfg.learner.lr, "adam_eps": cfg.learner.adam_eps, "weight_decay": cfg.learner.weight_decay,
            "max_grad_norm": cfg.learner.max_grad_norm, "warmup_steps": cfg.learner.warmup_steps,
            "kl_coef": cfg.learner.kl_coef, "clip_eps": cfg.learner.clip_eps,
            "micro_batch_size": cfg.learner.micro_batch_size, "lora": to_dict(cfg.learner.lora),
            "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p, "max_turns": cfg.rollout.max_turns,
            "max_tokens_per_turn": cfg.rollout.max_tokens_per_turn, "max_total_tokens": cfg.rollout.max_total_tokens,
            "reward": to_dict(cfg.reward), "seed": cfg.learner.seed, "threads": threads, "tools": True,
            "side": side, "stop": [TRL_STOP] if side == "trl" else []}
    _check_matched(cfg)
    (out_root / f"{side}_spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    out = out_root / f"{side}_result.json"
    cmd = [args.trl_python, str(ROOT / "bench" / "trl_grpo_side.py"), "--spec", str(out_root / f"{side}_spec.json"),
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    log_path = out_root / f"{side}.log"
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed ({proc.returncode}); see {log_path}:\n" + log_path.read_text()[-3000:])
    result = json.loads(out.read_text())
    played = [sorted(set(s.get("task_ids") or [])) for s in result["steps"]]
    return result | {"wall_s": wall, "same_tasks_as_planned": played == planned_by_step(order, len(played))}


def _check_matched(cfg) -> None:
    """The TRL side reproduces these settings; anything else in the config would silently not be matched."""
    learner = cfg.learner
    problems = [name for name, ok in [
        ("learner.algo=grpo", learner.algo == "grpo"), ("learner.ppo_epochs=1", learner.ppo_epochs == 1),
        ("learner.kl_estimator=k3", learner.kl_estimator == "k3"), ("learner.kl_mode=loss", learner.kl_mode == "loss"),
        ("learner.loss_agg=token-mean", learner.loss_agg == "token-mean"),
        ("learner.clip_eps_high=None", learner.clip_eps_high is None),
        ("learner.entropy_coef=0", not learner.entropy_coef),
        ("learner.dtype=float32", learner.dtype == "float32"), ("learner.num_workers=1", learner.num_workers == 1),
        ("learner.dual_clip_c=None", learner.dual_clip_c is None), ("learner.tis_cap=None", learner.tis_cap is None),
        ("learner.process_reward_mode=none", learner.process_reward_mode == "none"),
        ("train.mode=sync", cfg.train.mode == "sync"), ("tasks.env=calculator", cfg.tasks.env == "calculator"),
        ("reward.process_weights empty", not any(cfg.reward.process_weights.values())),
        ("reward.judge=none", cfg.reward.judge == "none")] if not ok]
    if problems:
        raise SystemExit("the TRL side does not reproduce this config; needs " + ", ".join(problems))


def _version(*names: str) -> str:
    for name in names:
        try:
            return version(name)
        except Exception:
            continue
    return "?"


def summarize(result: dict) -> dict:
    steps = result["steps"]
    timed = steps[1:] if len(steps) > 1 else steps
    seconds = sum(s["step_s"] for s in timed)
    gen = [s["generate_s"] for s in timed if s.get("generate_s") is not None]
    tokens = [s["sampled_tokens"] for s in steps if s.get("sampled_tokens") is not None]
    return {"side": result["side"], "backend": result["backend"], "steps": len(steps), "steps_timed": len(timed),
            "step_s": seconds / len(timed), "steps_per_s": len(timed) / seconds,
            "generate_s": sum(gen) / len(gen) if gen else None,
            "reward_by_step": [s["reward"] for s in steps], "success_by_step": [s["success"] for s in steps],
            "reward_first": steps[0]["reward"], "reward_last": steps[-1]["reward"],
            "success_first": steps[0]["success"], "success_last": steps[-1]["success"],
            "sampled_tokens_per_step": sum(tokens) / len(tokens) if tokens else None,
            "sampled_tokens_by_step": [s.get("sampled_tokens") for s in steps], "wall_s": result["wall_s"],
            "same_tasks_as_planned": result.get("same_tasks_as_planned")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="K training steps per side (the rate is over 2..K)")
    parser.add_argument("--tasks-per-step", type=int, default=None, help="default: the config's (8)")
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    parser.add_argument("--sides", default=",".join(DEFAULT_SIDES),
                        help="comma-separated subset of " + ", ".join(SIDES) + " (trl-nostop: TRL without the stop "
                        "string, as TRL's HF generation runs out of the box)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "vs_trl.json"))
    args = parser.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    if not set(sides) <= set(SIDES) or args.steps < 2:
        raise SystemExit(f"--sides must be a subset of {', '.join(SIDES)} and --steps >= 2")
    if any(s.startswith("trl") for s in sides) and not Path(args.trl_python).exists():
        raise SystemExit(f"no TRL python at {args.trl_python}; set up the venv as this file's docstring says")
    cfg = run_config(args)
    order = task_order(cfg)
    out_root = ROOT / "runs" / f"bench-vs-trl-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    out_root.mkdir(parents=True, exist_ok=True)
    results = {}
    for side in sides:  # one after the other: each has the machine to itself
        print(f"running {side} ({args.steps} steps) ...", flush=True)
        results[side] = run_ours(args, out_root, order) if side == "ours" else run_trl(args, out_root, cfg, order, side)
        (out_root / f"{side}.json").write_text(json.dumps(results[side], indent=2) + "\n")
    rows = [summarize(results[s]) for s in sides]
    by = {r["side"]: r for r in rows}
    ratios = {f"ours/{s}": by["ours"]["steps_per_s"] / by[s]["steps_per_s"] for s in by if s != "ours" and "ours" in by}
    ratio = ratios.get("ours/trl")
    k = args.steps
    print(f"\n| side | generation backend | s/step (steps 2..{k}) | steps/s | generate s/step | mean reward step 1 "
          f"| mean reward step {k} | success step 1 -> {k} | sampled tokens/step | ours / this side, steps/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tok = f"{r['sampled_tokens_per_step']:.0f}" if r["sampled_tokens_per_step"] is not None else "?"
        gen = f"{r['generate_s']:.1f}" if r["generate_s"] is not None else "?"
        rel = f"{ratios['ours/' + r['side']]:.2f}x" if f"ours/{r['side']}" in ratios else "-"
        print(f"| {r['side']} | {r['backend']} | {r['step_s']:.1f} | {r['steps_per_s']:.4f} | {gen} | "
              f"{r['reward_first']:.3f} | {r['reward_last']:.3f} | {r['success_first']:.0%} -> {r['success_last']:.0%} "
              f"| {tok} | {rel} |")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x steps/s" + (" (target >= 1.0x)" if name == "ours/trl" else ""))
    print("same tasks per step as planned: " + ", ".join(f"{r['side']} {r['same_tasks_as_planned']}" for r in rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "bench": "vs_trl", "steps": k, "tasks_per_step": cfg.train.tasks_per_step,
        "samples_per_task": cfg.rollout.samples_per_task, "config": args.config, "rows": rows,
        "ratio_ours_over_trl_steps_per_s": ratio, "ratios_steps_per_s": ratios, "tasks": [t.task_id for t in order],
        "details": {s: results[s] for s in sides}, "out_dir": str(out_root.relative_to(ROOT)),
        "machine": platform.platform(), "cpus": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
