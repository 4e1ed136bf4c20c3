"""P3, adapter sync: from the learner's updated adapter to every rollout worker serving it, verified, per LoRA rank
and worker count and serving mode; against reloading full weights (starting an engine on a merged checkpoint).

    .venv/bin/python bench/adapter_sync.py                              # ranks 8,16,64 x 1,2 workers, lora+merged
    .venv/bin/python bench/adapter_sync.py --workers 1,2,4 --repeats 5
    .venv/bin/python bench/adapter_sync.py --ranks 16 --workers 2 --probes episode,episode+behavior

One real `Learner` (SmolLM2-135M, fp32) per rank; each repeat perturbs its adapter's B matrices (a new policy) and
times `learners.sync.push_adapter` end to end: the adapter's bytes out of the learner (PEFT save to /dev/shm),
through the Ray object store to the pool, `load_adapter` on every worker (node-local write; vLLM LoRA load, or the
merge into the weights), and the verification every training step runs: checksum, and each worker's prompt
logprobs on a 64-token probe against the learner's. The phases inside the pool come from its sync report.
"Full reload" is the alternative without adapters: a new engine on a checkpoint with the update merged in (the
time from actor start to its first answer); a sync that restarted every worker would take at least that.
Prints a table, writes bench/results/adapter_sync.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def perturb(learner, seed: int, scale: float = 0.01) -> None:
    """A new policy: fresh random B matrices (what an update does to the adapter, larger)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in learner.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def time_syncs(learner, pool, repeats: int, seed: int, probe: str = "fixed", steps=None) -> list[dict]:
    """``probe``: "fixed" (the 64-token restore probe), "episode" (a training step's: the episode of the batch just
    played that the update pushes hardest, every worker asked for its logprobs before and after the load) or
    "episode+behavior" (the same, the "before" taken from the behavior logprobs the episode was sampled with).
    ``steps``: the pool's step numbers to play (an iterator shared by every call on one pool: a step the pool has
    played already would come back from its cache, sampled by an older version)."""
    import ray

    from learners.sync import choose_probe, push_adapter

    out = []
    for i in range(repeats):
        chosen = None
        if probe != "fixed":
            batch, _ = ray.get(pool.get_batch.remote(next(steps)))  # played with the version served now
            chosen = choose_probe(batch, learner)
            if probe == "episode":
                chosen = (*chosen[:3], None)
        perturb(learner, seed * 1000 + i)
        started = time.perf_counter()
        files = learner.adapter_files()
        save_s = time.perf_counter() - started
        report = push_adapter(learner, pool, chosen)  # saves again inside; timed separately above for the breakdown
        total = time.perf_counter() - started - save_s
        out.append({"total_s": total, "save_s": save_s, "pool_sync_s": report["sync_s"],
                    **{k: report[k] for k in ("sync_probe_old_s", "sync_load_s", "sync_probe_new_s")},
                    "probe_tokens": len(chosen[0]) if chosen else 64,
                    "before_from_behavior": report["sync_before_from_behavior"],
                    "bytes": sum(len(v) for v in files.values()), "probe_error": report.get("probe_error")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="8,16,64")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--modes", default="lora,merged")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probes", default="fixed", help="comma list of fixed, episode, episode+behavior "
                                                          "(time_syncs); each is a row")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter_sync.json"))
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]

    import ray

    from actors.config import RolloutConfig
    from actors.remote import start_reward_actor, start_rollout_pool, start_rollout_workers
    from cluster.model import resolve_model
    from envs.calculator import generate_tasks
    from learners.config import LearnerConfig
    from learners.learner import Learner
    from learners.policy import LoraSettings
    from rewards import RewardConfig

    model_path = str(resolve_model("smollm2-135m"))
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    learners = {r: Learner(LearnerConfig(lora=LoraSettings(rank=r, alpha=2.0 * r), cpu_threads=1), model_path,
                           temperature=1.0) for r in ranks}
    rows = []
    for mode in args.modes.split(","):
        for n in [int(w) for w in args.workers.split(",")]:
            cfg = RolloutConfig(num_workers=n, num_cpus_per_worker=0.5, kv_cache_gib=0.5, max_model_len=1024,
                                max_num_seqs=8, max_loras=2, keep_versions=2, max_lora_rank=max(ranks),
                                adapter_serving=mode)
            started = time.perf_counter()
            workers = start_rollout_workers(model_path, cfg)
            engine_start_s = time.perf_counter() - started
            pool = start_rollout_pool(workers, start_reward_actor(RewardConfig()), generate_tasks(16, seed=0),
                                      tasks_per_step=2, seed=0, engine_dtype=cfg.dtype, out_dir=None)
            steps = itertools.count()
            for r, probe in [(r, p) for r in ranks for p in args.probes.split(",")]:
                runs = time_syncs(learners[r], pool, args.repeats, seed=r, probe=probe, steps=steps)
                rows.append({"mode": mode, "workers": n, "rank": r, "probe": probe, "engine_start_s": engine_start_s,
                             "total_s": statistics.median(x["total_s"] for x in runs),
                             "pool_sync_s": statistics.median(x["pool_sync_s"] for x in runs),
                             "save_s": statistics.median(x["save_s"] for x in runs),
                             **{k: statistics.median(x[k] for x in runs)
                                for k in ("sync_probe_old_s", "sync_load_s", "sync_probe_new_s")},
                             "probe_tokens": statistics.median(x["probe_tokens"] for x in runs),
                             "adapter_mb": runs[0]["bytes"] / 1e6, "runs": runs})
                row = rows[-1]
                print(f"{mode:6s} workers {n} rank {r:3d} probe {probe}: sync {row['total_s']:.2f} s "
                      f"(pool {row['pool_sync_s']:.2f}: "
                      f"probe old {row['sync_probe_old_s']:.2f}, load {row['sync_load_s']:.2f}, probe new "
                      f"{row['sync_probe_new_s']:.2f}; save {row['save_s']:.2f}), adapter {row['adapter_mb']:.1f} MB",
                      flush=True)
            for w in [*workers, pool]:
                ray.kill(w)
            time.sleep(3)

    # Full reload: a fresh engine on a merged checkpoint (the weights a sync would have to reload), 1 worker.
    reload_cfg = replace(RolloutConfig(num_workers=1, num_cpus_per_worker=0.5, kv_cache_gib=0.5, max_model_len=1024,
                                       max_num_seqs=8), adapter_serving="merged")
    started = time.perf_counter()
    (worker,) = start_rollout_workers(model_path, reload_cfg)
    full_reload_s = time.perf_counter() - started
    ray.kill(worker)
    ray.shutdown()

    print()
    print("| serving | workers | rank | probe (tokens) | adapter MB | sync, verified (s) | probe before | load "
          "| probe after | full reload (s) | reload / sync |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['workers']} | {row['rank']} | {row['probe']} ({row['probe_tokens']:.0f}) | "
              f"{row['adapter_mb']:.1f} | {row['total_s']:.2f} | "
              f"{row['sync_probe_old_s']:.2f} | {row['sync_load_s']:.2f} | {row['sync_probe_new_s']:.2f} | "
              f"{full_reload_s:.1f} | {full_reload_s / row['total_s']:.0f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "full_reload_s": full_reload_s, "repeats": args.repeats,
                                          "machine": platform.processor() or platform.machine()}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
