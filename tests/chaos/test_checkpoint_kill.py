"""SIGKILL during checkpoint saves, with a real Learner: after every kill ``latest_checkpoint`` names a complete
checkpoint that ``load_checkpoint`` restores, no older than the last save that returned, and the resume point never
steps back from one kill to the next.

A server process loads the Learner once and forks a saver per round (so 20+ kills do not pay 20 model loads); the
saver resumes like a job (``latest_checkpoint``), saves that step again, then each next step twice (a second save
replaces a complete checkpoint: the rename-away path), marking each save's adapter and learner state with its step so
a restore of a mix of two saves would show. Its renames are slowed (50 ms before and after) and announced on stdout,
with BEGIN and END around each save, so the parent knows where each kill landed. 20 kills come at seeded random
moments after the saver's first BEGIN, and 4 more exactly in the window where a re-saved step's old copy is renamed
away and the new one is not yet in place.

    pytest tests/chaos/test_checkpoint_kill.py -s      # prints where the kills landed
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

RANDOM_KILLS, WINDOW_KILLS = 20, 4
RENAME_PAUSE_S = 0.05
REPO = Path(__file__).resolve().parents[2]


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: lines of the saver and the server never interleave


def _marker(learner):
    """The LoRA tensor set to the step before each save (a restore must show the step it claims)."""
    return next(p for name, p in learner.model.named_parameters() if "lora_B" in name)


def _saver(learner, run_dir: Path, once: bool) -> None:
    """Runs in a forked child: save forever (or once), announcing each save and each rename."""
    import torch

    from jobs.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint

    real_rename, real_replace = os.rename, os.replace

    def announced(real):
        def rename(src, dst, *args, **kwargs):
            _say(f"RENAME {Path(src).name} {Path(dst).name}")
            time.sleep(RENAME_PAUSE_S)
            real(src, dst, *args, **kwargs)
            _say(f"RENAMED {Path(src).name} {Path(dst).name}")
            time.sleep(RENAME_PAUSE_S)
        return rename

    os.rename, os.replace = announced(real_rename), announced(real_replace)
    try:
        latest = latest_checkpoint(run_dir)
        step = load_checkpoint(latest, learner) if latest else 1  # resume, then save that step again first
        for step in [step] + [s for s in range(step + 1, step + 10_000) for _ in range(2)]:
            with torch.no_grad():
                _marker(learner).fill_(float(step))
            learner.step = step
            _say(f"BEGIN {step}")
            save_checkpoint(run_dir, step, learner, {"position": step, "seed": 0, "version": step})
            _say(f"END {step}")
            if once:
                break
        os._exit(0)
    except BaseException as err:  # noqa: BLE001 - report anything, never fall back into the server's loop
        _say(f"ERROR {type(err).__name__}: {err}")
        os._exit(1)


def serve(model_path: str, run_dir: str) -> None:
    """The server: load the Learner once, then per line on stdin ("loop" or "once") fork a saver and wait for it."""
    import torch

    from learners.config import LearnerConfig
    from learners.learner import Learner

    # One torch thread: forked children must not inherit a running OpenMP pool.
    learner = Learner(LearnerConfig(cpu_threads=1), model_path, temperature=1.0)
    for p in learner.params:  # one optimizer step, so learner.pt holds Adam moments as a real one does
        p.grad = torch.full_like(p, 1e-3)
    learner.optimizer.step()
    learner.optimizer.zero_grad(set_to_none=True)
    _say("READY")
    for line in sys.stdin:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _saver(learner, Path(run_dir), once=line.strip() == "once")
            os._exit(1)
        _say(f"PID {pid}")
        os.waitpid(pid, 0)
        _say(f"DEAD {pid}")


class Server:
    def __init__(self, model_path: str, run_dir: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.chaos.test_checkpoint_kill", model_path,
                                      str(run_dir)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)  # loads while the test loads its own Learner

    def read_until(self, prefix: str) -> list[str]:
        lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, f"the checkpoint server exited (rc {self.proc.poll()}) before {prefix}; read {lines[-5:]}"
            if line.startswith(prefix):
                return lines + [line.strip()]
            lines.append(line.strip())

    def start(self, mode: str) -> int:
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        return int(self.read_until("PID")[-1].split()[1])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _where(lines: list[str]) -> str:
    """Where the saver was when it died: the last thing it announced."""
    events = [line for line in lines if line.split()[0] in ("BEGIN", "END", "RENAME", "RENAMED")]
    if not events or events[-1].startswith("END"):
        return "between saves"
    last = events[-1].split()
    if last[0] == "RENAMED" and last[2].startswith(".old_step_"):
        return "mid-save: old copy renamed away, new one not in place"
    if last[0] in ("RENAME", "RENAMED") and last[2] == "latest":
        return "mid-save: replacing latest"
    return "mid-save: writing or renaming"


def test_kill_during_saves_never_loses_the_latest_checkpoint(model_path, tmp_path):
    import torch

    from jobs.checkpoints import OLD_PREFIX, TMP_PREFIX, is_complete, latest_checkpoint, load_checkpoint
    from learners.config import LearnerConfig
    from learners.learner import Learner

    rng = random.Random(1234)
    run_dir = tmp_path / "run"
    server = Server(model_path, run_dir)
    learner = Learner(LearnerConfig(), model_path, temperature=1.0)
    server.read_until("READY")
    completed, begun, resumable, places, from_old = 0, 0, 0, Counter(), 0
    started = time.perf_counter()
    try:
        rounds = ["random"] * RANDOM_KILLS + ["window"] * WINDOW_KILLS
        for kind in rounds:
            pid = server.start("loop")
            lines = server.read_until("BEGIN")  # resumed: from here on every moment is a save or between two
            if kind == "random":
                time.sleep(rng.uniform(0.0, 2.0))
            else:  # kill as soon as a re-save has renamed the old copy away
                lines += server.read_until("RENAMED step_")
                assert ".old_step_" in lines[-1], lines[-1]
            os.kill(pid, signal.SIGKILL)
            lines += server.read_until(f"DEAD {pid}")
            assert not [line for line in lines if line.startswith("ERROR")], lines
            completed = max([completed] + [int(x.split()[1]) for x in lines if x.startswith("END")])
            begun = max([begun] + [int(x.split()[1]) for x in lines if x.startswith("BEGIN")])
            places[_where(lines)] += 1

            checkpoint = latest_checkpoint(run_dir)
            if completed == 0:
                continue
            assert checkpoint is not None and is_complete(checkpoint), (checkpoint, lines[-6:])
            from_old += checkpoint.name.startswith(OLD_PREFIX)
            step = load_checkpoint(checkpoint, learner)
            assert completed <= step <= begun, (step, completed, begun, checkpoint)
            assert step >= resumable, (step, resumable, checkpoint)  # the resume point never steps back
            resumable = step
            assert learner.step == step  # learner.pt and step.json of one save
            assert torch.all(_marker(learner) == float(step))  # the adapter of that save too
            assert (checkpoint / "cursor.json").read_text() == f'{{"position": {step}, "seed": 0, "version": {step}}}'

        pid = server.start("once")  # a save that runs to the end cleans up after the killed ones
        lines = server.read_until(f"DEAD {pid}")
        assert [x for x in lines if x.startswith("END")], lines
        root = run_dir / "checkpoints"
        assert not [p.name for p in root.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
        assert latest_checkpoint(run_dir) == root / (root / "latest").read_text()
    finally:
        server.proc.kill()
    mid_save = sum(n for place, n in places.items() if place.startswith("mid-save"))
    print(f"\n{len(rounds)} kills in {time.perf_counter() - started:.0f} s: {dict(places)}; {mid_save} mid-save; "
          f"resumed from a renamed-away copy {from_old} times; last completed save step {completed}")
    assert mid_save >= RANDOM_KILLS // 2 + WINDOW_KILLS
    assert places["mid-save: old copy renamed away, new one not in place"] >= WINDOW_KILLS


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
