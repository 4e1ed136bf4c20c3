"""Memory of the default job: peak PSS per actor (with its child processes) and in total, sampled while
`python -m jobs.train` runs; then the learner's weights, to show the KL reference costs none.

    .venv/bin/python bench/memory.py                                   # configs/train.yaml, 2 steps, no eval
    .venv/bin/python bench/memory.py --overrides train.steps=6 eval.every=0
    .venv/bin/python bench/memory.py --config configs/train_support_desk.yaml --overrides train.steps=10

PSS (proportional set size) counts a page shared by N processes as 1/N in each, so the per-actor figures add up to
the total without counting the shared libraries and the model file's page cache several times (RSS would). Each
process is charged to the nearest Ray actor above it (a vLLM engine-core process to its rollout worker); Ray's own
daemons are one row. Sampled every --interval seconds; the total's peak is the largest sum at one instant.
Prints a table, writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
ACTORS = {"RolloutWorker": "rollout worker", "RayTrainWorker": "learner (Ray Train worker)",
          "RolloutPool": "rollout pool", "RewardActor": "reward actor", "TrainController": "Ray Train controller"}
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray::IDLE",
               "default_worker.py")


def classify(proc: psutil.Process, cmd: dict[int, str], parent: dict[int, int], driver: int) -> str | None:
    """The row a process is charged to; None = not part of the job."""
    pid = proc.pid
    while pid:
        line = cmd.get(pid, "")
        for key, row in ACTORS.items():
            if f"ray::{key}" in line:
                return row
        if pid == driver:
            return "driver (jobs.train)"
        if any(d in line for d in RAY_DAEMONS):
            return "Ray daemons and idle workers"
        pid = parent.get(pid, 0)
    return None


def sample(driver: int) -> dict[str, float]:
    procs = list(psutil.process_iter(["pid", "ppid", "cmdline"]))
    cmd = {p.pid: " ".join(p.info["cmdline"] or []) for p in procs}
    parent = {p.pid: p.info["ppid"] for p in procs}
    rows: dict[str, float] = defaultdict(float)
    for p in procs:
        row = classify(p, cmd, parent, driver)
        if row is None:
            continue
        try:
            rows[row] += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rows


def reference_costs_nothing() -> dict:
    """Parameter bytes of a real Learner (policy = base + LoRA; reference = the same base, adapter off) against
    the base model's own parameter bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    from cluster.model import resolve_model
    from learners.config import LearnerConfig
    from learners.learner import Learner

    path = str(resolve_model("smollm2-135m"))
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    learner = Learner(LearnerConfig(), path, temperature=1.0)
    params = list(learner.model.parameters())
    lora = sum(p.numel() * p.element_size() for n, p in learner.model.named_parameters() if "lora_" in n)
    total = sum(p.numel() * p.element_size() for p in params)
    return {"base_mb": base_bytes / 1e6, "learner_params_mb": total / 1e6, "lora_mb": lora / 1e6,
            "extra_beyond_base_and_lora_mb": (total - base_bytes - lora) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--overrides", nargs="*", default=["train.steps=2", "eval.every=-1"])
    parser.add_argument("--run-dir", help="where the run goes (default runs/bench-memory-<time>)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    args = parser.parse_args()

    run_dir = args.run_dir or ROOT / "runs" / f"bench-memory-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "jobs.train", "--config", args.config, f"run.run_dir={run_dir}",
           *args.overrides]
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: [output.append(line) or print(line, end="", flush=True)
                                              for line in job.stdout], daemon=True)
    reader.start()
    peak: dict[str, float] = defaultdict(float)
    peak_total, samples = 0.0, 0
    while job.poll() is None:
        rows = sample(job.pid)
        samples += 1
        for row, pss in rows.items():
            peak[row] = max(peak[row], pss)
        peak_total = max(peak_total, sum(rows.values()))
        time.sleep(args.interval)
    reader.join(timeout=10)
    if job.returncode != 0:
        raise SystemExit(f"jobs.train failed ({job.returncode}):\n{''.join(output)[-3000:]}")

    weights = reference_costs_nothing()
    print(f"\n`python -m jobs.train --config {args.config} {' '.join(args.overrides)}`, {samples} samples\n")
    print("| process (with its children) | peak PSS (GB) |")
    print("|---|---|")
    for row, pss in sorted(peak.items(), key=lambda kv: -kv[1]):
        print(f"| {row} | {pss / 1e9:.2f} |")
    print(f"| **total at one instant** | **{peak_total / 1e9:.2f}** |")
    print(f"\nlearner parameters {weights['learner_params_mb']:.0f} MB = base {weights['base_mb']:.0f} MB + LoRA "
          f"{weights['lora_mb']:.1f} MB + {weights['extra_beyond_base_and_lora_mb']:.1f} MB: the KL reference "
          "(the base with the adapter off) holds no weights of its own")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": cmd[1:], "peak_pss_gb": {k: v / 1e9 for k, v in peak.items()},
                                          "peak_total_gb": peak_total / 1e9, "samples": samples,
                                          "weights": weights}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
