"""Which episodes invented an id: per task kind, the episodes whose calls pass an id that neither the prompt nor an
earlier tool result showed (``rewards.invented_ids``), and how many of those were solved anyway.

    python -m jobs.id_audit RUN/eval/step_00000.parquet RUN/eval/step_00014.parquet

Reads any episode Parquet (eval/, trajectories/, jobs.eval's episodes.parquet); the kind is the task's meta.kind.
"""

from __future__ import annotations

import sys
from pathlib import Path

from actors.evaluation import kind_of, succeeded
from actors.trajectory import Trajectory, read_parquet
from envs.tasks import Task
from rewards.invented_ids import invented_ids


def count_by_kind(trajectories: list[Trajectory]) -> dict[str, tuple[int, int, int]]:
    """meta.kind -> (episodes, episodes with an invented id, those among the solved ones). The task prompt is the
    episode's first user message."""
    counts: dict[str, list[int]] = {}
    for t in trajectories:
        kind = kind_of(t) or t.env
        prompt = next((m.get("content") or "" for m in t.messages if m.get("role") == "user"), "")
        flagged = any(v < 0 for v in invented_ids(t, Task(t.task_id, t.env, prompt, "{}")))
        row = counts.setdefault(kind, [0, 0, 0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + flagged, row[2] + (flagged and succeeded(t))
    return {kind: (n, f, fs) for kind, (n, f, fs) in sorted(counts.items())}


def main(argv: list[str] | None = None) -> None:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: python -m jobs.id_audit EPISODES.parquet ... (e.g. RUN/eval/step_00000.parquet)")
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"no episode file at {', '.join(missing)}. Fix: pass Parquet files a run wrote, e.g. "
                         "RUN/eval/step_00000.parquet or RUN/trajectories/step_00001.parquet")
    for path in paths:
        try:
            episodes = read_parquet(path)
        except Exception as e:  # not Parquet, or another table (tasks, metrics): name it, not a pyarrow trace
            raise SystemExit(f"{path} is not an episode file ({type(e).__name__}: {e}). Fix: pass the episodes a "
                             "run wrote, e.g. RUN/eval/step_00000.parquet") from None
        print(path)
        for kind, (n, flagged, solved_too) in count_by_kind(episodes).items():
            print(f"  {kind:18s} {n:4d} episodes, {flagged:4d} with an invented id ({solved_too} of them solved)")


if __name__ == "__main__":
    main()
