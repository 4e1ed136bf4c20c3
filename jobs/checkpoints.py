"""Atomic checkpoints in the run directory: adapter (PEFT), value head (PPO), learner state (optimizer, step, RNG),
task cursor.

A job killed at any moment of a save (``kill -9``, a lost node, a power cut) leaves a complete checkpoint for
``--resume``, never a half-written one, and never one older than the last save that returned
(tests/chaos/test_checkpoint_kill.py). How:

1. Every file is written into ``.tmp_step_<step>_<pid>`` and fsynced; ``step.json`` goes last, holding the size of
   every other file. A checkpoint is *complete* when its ``step.json`` parses and every file it lists has that size.
2. The directory is fsynced and renamed to ``step_<step>``. Re-saving a step that exists first renames the old copy
   away to ``.old_step_<step>_<pid>`` (a directory cannot be replaced in one rename), and deletes it at the end.
3. ``latest`` (a file naming the directory) is replaced atomically (temp file + rename, fsynced).

``latest_checkpoint`` takes the complete checkpoint with the highest step, a renamed-away copy included, so a kill
between the two renames of a re-save or a lost or damaged ``latest`` costs nothing; ``latest`` only breaks ties.
(Trusting ``latest`` first, as this module once did, let the resume point step back and forth: a kill after a save's
rename but before ``latest`` moved left a newer complete step that the pointer did not name; the chaos test found
it.) The next save cleans up after a killed one: temporary directories of processes that are gone are deleted, and
a renamed-away copy whose replacement never arrived is put back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from learners.value_head import FILENAME as VALUE_HEAD_FILE

TMP_PREFIX, OLD_PREFIX = ".tmp_step_", ".old_step_"  # + "<step>_<pid>": a save in progress, a copy renamed away


def save_checkpoint(run_dir: Path, step: int, learner, cursor: Mapping) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    final = root / f"step_{step:06d}"
    tmp = root / f"{TMP_PREFIX}{step:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = learner.state()
    files = {f"adapter/{name}": data for name, data in state["adapter"].items()}
    files |= {name: data for name, data in state.items() if name != "adapter"}  # learner.pt, value head (PPO)
    files["cursor.json"] = json.dumps(dict(cursor)).encode()
    for name, data in files.items():
        _write(tmp / name, data)
    _fsync_dir(tmp / "adapter")
    _write(tmp / "step.json", json.dumps({"step": step, "files": {k: len(v) for k, v in files.items()}}).encode())
    _fsync_dir(tmp)
    old = None
    if final.exists():
        old = root / f"{OLD_PREFIX}{step:06d}_{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)  # from here until the next rename, latest_checkpoint finds this copy instead
    os.rename(tmp, final)
    _fsync_dir(root)
    _write(root / ".latest.tmp", final.name.encode())
    os.replace(root / ".latest.tmp", root / "latest")
    _fsync_dir(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint to resume from: the complete one with the highest step (None when there is none). Of copies
    of one step, the one ``latest`` names wins, then a ``step_*`` directory over a renamed-away copy."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    pointer = root / "latest"
    named = pointer.read_text(errors="replace").strip() if pointer.is_file() else None
    found = []
    for path in root.iterdir():
        if (path.name.startswith("step_") or path.name.startswith(OLD_PREFIX)) and is_complete(path):
            found.append((checkpoint_step(path), path.name == named, path.name.startswith("step_"), path))
    return max(found)[3] if found else None


def is_complete(path: Path) -> bool:
    """``step.json`` parses and every file it lists is there with its size (a checkpoint written before the sizes
    were recorded counts as complete when its ``step.json`` parses)."""
    try:
        meta = json.loads((Path(path) / "step.json").read_text())
        int(meta["step"])
        return all((Path(path) / name).stat().st_size == size for name, size in meta.get("files", {}).items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def clean_stale(root: Path) -> None:
    """Undo what saves of processes that are gone left behind: delete their temporary directories, and delete
    their renamed-away copies, or put such a copy back when its step has no complete directory."""
    for path in list(Path(root).glob(".*_step_*")):
        prefix, _, rest = path.name.rpartition("_step_")
        step, _, pid = rest.partition("_")
        if prefix + "_step_" not in (TMP_PREFIX, OLD_PREFIX) or not pid.isdigit() or _alive(int(pid)):
            continue
        final = path.parent / f"step_{step}"
        if path.name.startswith(OLD_PREFIX) and not is_complete(final) and is_complete(path):
            shutil.rmtree(final, ignore_errors=True)
            os.rename(path, final)
            _fsync_dir(path.parent)
        else:
            shutil.rmtree(path, ignore_errors=True)


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

        ray.get(pool.load_cursor_state.remote(checkpoint_cursor(path)))
    return checkpoint_step(path)


def checkpoint_cursor(path: Path) -> dict:
    """The task cursor state a checkpoint saved (``RolloutPool.cursor_state``)."""
    return json.loads((Path(path) / "cursor.json").read_text())


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "step.json").read_text())["step"])


def _alive(pid: int) -> bool:
    """A process with this pid runs on this machine (not this one: a save of ours that raised is over)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames and new entries in ``path`` durable (a crash after a rename must not undo it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
