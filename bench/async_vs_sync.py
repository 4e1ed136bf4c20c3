"""P5, async vs sync: steps/s of `jobs.train` on the same config in sync and in async mode, run back to back.

    .venv/bin/python bench/async_vs_sync.py                      # 5 steps of 4 tasks each, three runs
    .venv/bin/python bench/async_vs_sync.py --steps 8 --tasks-per-step 8

Runs (each a real `python -m jobs.train` on the local Ray cluster, SFT warm start cached, no held-out eval):
``sync/merged`` is the default job (on CPU the adapter is merged into the engine's weights after each sync);
``sync/lora`` serves the adapter as a vLLM LoRA adapter, as async mode must (several versions resident);
``async/lora`` is `train.mode=async train.max_staleness=1` with TIS. The rate is over steps 2..N (step 1 carries
the warm-up, and in async mode nothing overlaps it). The async/sync ratio that isolates the pipelining is
async/lora over sync/lora; async/lora over sync/merged is what a user of the default gains or loses.
Prints a table, writes bench/results/async_vs_sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASYNC = ["train.mode=async", "train.max_staleness=1", "learner.tis_cap=2.0", "rollout.adapter_serving=lora",
         "rollout.max_loras=2", "rollout.keep_versions=2"]
RUNS = {"sync/merged": [], "sync/lora": ["rollout.adapter_serving=lora"], "async/lora": ASYNC}


def run(name: str, overrides: list[str], args, out_root: Path) -> dict:
    run_dir = out_root / name.replace("/", "-")
    cmd = [sys.executable, "-m", "jobs.train", "--config", "configs/train.yaml", f"run.run_dir={run_dir}",
           f"train.steps={args.steps}", f"train.tasks_per_step={args.tasks_per_step}", "eval.every=-1",
           f"train.checkpoint_every={args.steps}", *overrides]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = history[1:]
    seconds = sum(m["step_s"] for m in timed)
    phase = {k: sum(m.get(k, 0.0) for m in timed) / len(timed) for k in
             ("rollout_s", "reward_s", "learn_s", "sync_s", "rollout_play_s")}
    return {"run": name, "steps_timed": len(timed), "steps_per_s": len(timed) / seconds,
            "step_s": seconds / len(timed), "wall_s": wall, "reward_first": history[0]["reward"],
            "reward_last": history[-1]["reward"], "staleness": [m.get("staleness", 0.0) for m in history],
            "stale_regenerated": history[-1].get("stale_regenerated", 0.0),
            "tis_weight_mean": [m.get("tis_weight_mean") for m in history],
            **{f"mean_{k}": v for k, v in phase.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tasks-per-step", type=int, default=4)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "async_vs_sync.json"))
    args = parser.parse_args()
    out_root = ROOT / "runs" / f"bench-async-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    rows = [run(name, RUNS[name], args, out_root) for name in args.runs.split(",")]
    by = {r["run"]: r for r in rows}
    print("| run | s/step (steps 2..N) | steps/s | rollout wait s | learn s | sync s | reward first -> last |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['step_s']:.1f} | {r['steps_per_s']:.4f} | {r['mean_rollout_s']:.1f} | "
              f"{r['mean_learn_s']:.1f} | {r['mean_sync_s']:.1f} | {r['reward_first']:.2f} -> {r['reward_last']:.2f} |")
    ratios = {}
    for base in ("sync/lora", "sync/merged"):
        if "async/lora" in by and base in by:
            ratios[f"async/lora vs {base}"] = by["async/lora"]["steps_per_s"] / by[base]["steps_per_s"]
            print(f"async/lora vs {base}: {ratios[f'async/lora vs {base}']:.2f}x steps/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "async_vs_sync", "steps": args.steps, "tasks_per_step": args.tasks_per_step,
                               "rows": rows, "ratios": ratios, "machine": platform.platform(),
                               "cpus": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
