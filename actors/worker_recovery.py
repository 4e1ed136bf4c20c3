"""What the rollout pool does when a rollout worker dies: reap its engine's processes, start a replacement that
serves the current adapter version, and count it.

A worker is a Ray actor whose vLLM engine runs in child processes (the V1 engine core). ``kill -9`` of the actor, an
OOM kill or a lost node leaves those children without their parent; nothing in Ray or vLLM reaps them, and an
orphaned engine keeps its KV cache (GiBs) for good. So each worker reports its process tree once it is up, and after
its death the pool runs a small task pinned to that node which kills what is left of the tree (matched by pid *and*
start time, so a recycled pid is never hit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class WorkerLostError(RuntimeError):
    """A rollout worker died and may not be replaced; the message says why and what to change."""


def process_tree() -> dict:
    """This process and its descendants, as ``{"node_id", "pid", "children": [[pid, start_time], ...]}``."""
    import psutil
    import ray

    me = psutil.Process(os.getpid())
    children = []
    for child in me.children(recursive=True):
        try:
            children.append([child.pid, child.create_time()])
        except psutil.NoSuchProcess:
            continue
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": me.pid, "children": children}


def kill_leftovers(tree: Mapping) -> list[int]:
    """Kill the processes of ``tree`` that still run (same pid and start time); returns their pids.

    >>> kill_leftovers({"pid": 0, "children": [[2**22 + 7, 0.0]]})  # gone already: nothing to do
    []
    """
    import psutil

    killed = []
    for pid, started in tree["children"]:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) > 0.01:
                continue  # the pid belongs to a newer process now
            proc.kill()
            killed.append(pid)
        except psutil.NoSuchProcess:
            continue
    return killed


def reap_on_node(tree: Mapping, timeout_s: float = 30.0) -> list[int]:
    """Run ``kill_leftovers`` on the node the dead worker lived on; [] if that node is gone (and its processes)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    if tree["node_id"] not in alive:
        return []
    task = ray.remote(kill_leftovers).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(tree["node_id"], soft=False))
    return ray.get(task.remote(tree), timeout=timeout_s)
