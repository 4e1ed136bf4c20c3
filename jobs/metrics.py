"""Training metrics: JSONL + TensorBoard per step, a one-line progress report, curves and a time breakdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

PHASES = ("rollout_s", "reward_s", "learn_s", "sync_s")


def rewind(path: Path, step: int) -> int:
    """A resume from the checkpoint of ``step``: lines of later steps (they are about to be played again) move from
    ``path`` to ``<name>.rolled_back.jsonl`` beside it, so the log keeps one line per step and nothing is lost.
    Returns how many lines moved."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, later = [], []
    for line in path.read_text().splitlines():
        (later if line.strip() and json.loads(line)["step"] > step else kept).append(line + "\n")
    if later:
        with path.with_suffix(".rolled_back.jsonl").open("a") as f:
            f.write("".join(later))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
    return len(later)


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None:
            for name in ("metrics.jsonl", "eval.jsonl"):
                rewind(Path(run_dir) / name, resume_step)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; without it we still keep the JSONL
            pass

    def write(self, metrics: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, metrics["step"])
            self.writer.flush()


def step_line(m: dict, total: int) -> str:
    """The per-step progress line: what a user watches to see the run learn."""
    done = int(20 * m["step"] / total)
    phases = " ".join(f"{p[:-2]} {m.get(p, 0.0):.0f}s" for p in PHASES)
    played = m.get("rollout_play_s", m["rollout_s"])  # async: the batch played while the learner worked
    return (f"[{'#' * done}{'.' * (20 - done)}] step {m['step']}/{total} reward {m['reward']:.3f} "
            f"success {m['success']:.0%} kl {m['kl']:.4f} entropy {m['entropy']:.3f} clip {m['clip_frac']:.3f} "
            f"tok/s {m['sampled_tokens'] / max(played, 1e-9):.0f} | {phases} | v{m['version']}")


def time_breakdown(history: Sequence[dict]) -> str:
    total = sum(m["step_s"] for m in history)
    parts = {p[:-2]: sum(m.get(p, 0.0) for m in history) for p in PHASES}
    parts["idle/other"] = max(0.0, total - sum(parts.values()))
    return "time per phase: " + ", ".join(f"{k} {v:.0f}s ({v / total:.0%})" for k, v in parts.items())


def plot_curves(history: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("reward", "success", "kl")):
        ax.plot(steps, [m[key] for m in history], marker="o")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
