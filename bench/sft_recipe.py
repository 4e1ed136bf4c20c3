"""Size the SFT warm start: greedy held-out success of several SFT recipes over several seeds, on the real engine.

    .venv/bin/python bench/sft_recipe.py                       # the shipped recipe (24 demos), seeds 0-2, 128 tasks
    .venv/bin/python bench/sft_recipe.py --demos 16 32 64 --seeds 0 --tasks 64

For every (num_demos, seed) it trains an SFT adapter (configs/sft.yaml otherwise), then one in-process vLLM engine
plays one greedy episode per held-out test task under each adapter. Prints a table, writes
bench/results/sft_recipe.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from actors.adapters import read_adapter_dir
from actors.rollout_worker import RolloutWorker
from cluster.model import resolve_model
from envs.calculator import generate_tasks
from jobs.config import RunConfig
from jobs.config_loader import load_config
from actors.evaluation import evaluate
from learners.sft import SFTConfig, train_sft

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, nargs="+", default=[24])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", type=int, default=128, help="held-out test tasks (seed 1234)")
    parser.add_argument("--warmup", type=int, default=None, help="override warmup_steps")
    parser.add_argument("--lr", type=float, default=None, help="override lr")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sft_recipe.json"))
    args = parser.parse_args()

    base_cfg = replace(load_config(SFTConfig, ROOT / "configs" / "sft.yaml"), check_tasks=0)
    if args.warmup is not None:
        base_cfg = replace(base_cfg, warmup_steps=args.warmup)
    if args.lr is not None:
        base_cfg = replace(base_cfg, lr=args.lr)
    model_path = str(resolve_model(base_cfg.model))
    work = Path(tempfile.mkdtemp(prefix="sft-recipe-"))
    adapters = {}
    for demos in args.demos:
        for seed in args.seeds:
            cfg = replace(base_cfg, num_demos=demos, seed=seed)
            metrics = train_sft(cfg, model_path, work / f"d{demos}-s{seed}", log=lambda *a, **k: None)
            adapters[(demos, seed)] = (work / f"d{demos}-s{seed}", metrics["train_s"])
            print(f"trained demos={demos} seed={seed} in {metrics['train_s']:.0f}s", flush=True)

    run_cfg = load_config(RunConfig, ROOT / "configs" / "train.yaml")  # the episode limits RL trains and evaluates with
    worker = RolloutWorker(model_path, run_cfg.rollout)
    tasks = generate_tasks(args.tasks, seed=1234, split="test")
    rows = [{"demos": 0, "seed": None, **_scores(evaluate(worker.run_episodes, tasks, 0))}]
    for version, ((demos, seed), (path, train_s)) in enumerate(adapters.items(), start=1):
        worker.load_adapter(version, read_adapter_dir(path))
        t0 = time.perf_counter()
        rows.append({"demos": demos, "seed": seed, "train_s": train_s,
                     **_scores(evaluate(worker.run_episodes, tasks, version)), "eval_s": time.perf_counter() - t0})
        print(rows[-1], flush=True)

    print(f"\nheld-out greedy success on {args.tasks} calculator test tasks (lr {base_cfg.lr}, "
          f"warmup {base_cfg.warmup_steps}, batch {base_cfg.batch_size})")
    print(f"{'demos':>6} {'seeds':>8} {'success mean':>13} {'min':>6} {'max':>6} {'valid call':>11}")
    for demos in [0, *args.demos]:
        group = [r for r in rows if r["demos"] == demos]
        succ = [r["success"] for r in group]
        print(f"{demos:>6} {len(group):>8} {statistics.mean(succ):>13.1%} {min(succ):>6.1%} {max(succ):>6.1%} "
              f"{statistics.mean(r['valid_first_call'] for r in group):>11.1%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": {"lr": base_cfg.lr, "warmup_steps": base_cfg.warmup_steps,
                                                     "batch_size": base_cfg.batch_size, "tasks": args.tasks},
                                          "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def _scores(result: dict) -> dict:
    return {"success": result["success"], "valid_first_call": result["valid_first_call"]}


if __name__ == "__main__":
    main()
