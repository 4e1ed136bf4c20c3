"""Per-call cost of the python tool's sandbox: the isolated mode (namespaces, private root, unprivileged uid) against
the audit-hook mode (the sandbox as it was before: rlimits + audit hook, same user, host namespaces).

    .venv/bin/python bench/sandbox_overhead.py                  # 40 calls per mode and program, 4-thread burst
    .venv/bin/python bench/sandbox_overhead.py --calls 10

The python env runs one sandbox per tool call during RL, so the start-up cost is paid on every call. Modes are
interleaved call by call so machine noise hits them alike. Programs: ``print(1)`` (pure start-up) and a task's
reference program (the prime sieve below 50,000, the slowest task kind). Also: calls/s with 4 threads calling at
once, as the rollout runner's tool thread pool does. Prints a table, writes bench/results/sandbox_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from envs.sandbox import run_python, sandbox_status

ROOT = Path(__file__).resolve().parents[1]
SIEVE = ("n = 50000\nis_prime = [True] * n\nfor i in range(2, n):\n    if is_prime[i]:\n"
         "        is_prime[i * i::i] = [False] * len(is_prime[i * i::i])\nprint(sum(is_prime[2:]))")
PROGRAMS = {"print(1)": "print(1)", "prime sieve (task program)": SIEVE}
MODES = {"audit-hook (before)": ("audit-hook", True), "isolated": ("isolated", True),
         "isolated, hook off": ("isolated", False)}


def one_call(mode: str, hook: bool, code: str) -> float:
    os.environ["AGENTRL_SANDBOX"] = mode  # read per call; the bench runs one call at a time here
    t0 = time.perf_counter()
    r = run_python(code, wall_s=30, audit_hook=hook)
    elapsed = time.perf_counter() - t0
    if not r.ok:
        raise SystemExit(f"{mode} failed: {r.error}")
    return elapsed


def burst(mode: str, calls: int) -> float:
    os.environ["AGENTRL_SANDBOX"] = mode
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_python(SIEVE, wall_s=30), range(calls)))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
    return calls / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per mode and program")
    args = parser.parse_args()
    status = sandbox_status()
    if not status.complete:
        raise SystemExit(f"the isolated sandbox is not in place here:\n{status.table()}")
    times: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PROGRAMS} for m in MODES}
    for name, (mode, hook) in MODES.items():  # warm-up: page cache, the status probe
        one_call(mode, hook, "print(1)")
    for _ in range(args.calls):
        for program, code in PROGRAMS.items():
            for name, (mode, hook) in MODES.items():
                times[name][program].append(one_call(mode, hook, code))
    rows = []
    for name in MODES:
        for program in PROGRAMS:
            ts = sorted(times[name][program])
            rows.append({"mode": name, "program": program, "median_ms": 1000 * statistics.median(ts),
                         "p90_ms": 1000 * ts[int(0.9 * (len(ts) - 1))], "calls": len(ts)})
    bursts = {name: burst(MODES[name][0], 4 * max(4, args.calls // 4)) for name in ("audit-hook (before)", "isolated")}
    print("| mode | program | median ms | p90 ms |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['program']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} |")
    base = {r["program"]: r["median_ms"] for r in rows if r["mode"] == "audit-hook (before)"}
    for row in rows:
        if row["mode"] == "isolated":
            print(f"isolated - before, {row['program']}: +{row['median_ms'] - base[row['program']]:.1f} ms per call")
    for name, rate in bursts.items():
        print(f"4 threads, prime sieve, {name}: {rate:.1f} calls/s")
    out = {"rows": rows, "burst_calls_per_s_4_threads": bursts, "calls": args.calls, "cpus": os.cpu_count(),
           "machine": platform.platform(), "load_avg": os.getloadavg()}
    path = ROOT / "bench" / "results" / "sandbox_overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
