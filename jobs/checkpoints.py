"""Atomic checkpoints in the run directory: adapter (PEFT), value head (PPO), learner state (optimizer, step, RNG),
task cursor.

A checkpoint is written to a temporary directory and renamed into place, then ``latest`` is replaced atomically,
so a job killed mid-save leaves the previous checkpoint as ``latest``, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from learners.value_head import FILENAME as VALUE_HEAD_FILE


def save_checkpoint(run_dir: Path, step: int, learner, cursor: Mapping) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "adapter").mkdir(parents=True)
    state = learner.state()
    for name, data in state["adapter"].items():
        (tmp / "adapter" / name).write_bytes(data)
    for name, data in state.items():  # learner.pt, and the value head beside the adapter (PPO)
        if name != "adapter":
            (tmp / name).write_bytes(data)
    (tmp / "cursor.json").write_text(json.dumps(dict(cursor)))
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name)
    pointer.replace(root / "latest")
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "step.json").exists() else None


def load_checkpoint(path: Path, learner, pool=None) -> int:
    """Restore the learner (and, given the pool actor, the task cursor); returns the step to continue from."""
    path = Path(path)
    adapter = {p.name: p.read_bytes() for p in (path / "adapter").iterdir()}
    state = {"adapter": adapter, "learner.pt": (path / "learner.pt").read_bytes()}
    if (path / VALUE_HEAD_FILE).exists():
        state[VALUE_HEAD_FILE] = (path / VALUE_HEAD_FILE).read_bytes()
    learner.load_state(state)
    if pool is not None:
        import ray

        ray.get(pool.load_cursor_state.remote(json.loads((path / "cursor.json").read_text())))
    return int(json.loads((path / "step.json").read_text())["step"])
