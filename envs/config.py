"""Task-set configuration: which tasks a run plays."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config_loader import doc


@dataclass(frozen=True)
class TaskConfig:
    env: str = doc("calculator", "environment whose seeded generator makes the tasks when no path is given")
    path: str | None = doc(None, "a Parquet (or .jsonl) task file in the task schema (DESIGN.md); overrides the "
                                  "generator")
    num_tasks: int = doc(256, "tasks generated (or taken from the file's start): the pool a run draws from")
    split: str = doc("train", "generator split; held-out splits never share tasks with train")
    seed: int = doc(0, "generator seed")
    kinds: tuple[str, ...] = doc((), "keep only tasks whose meta.kind is one of these (support_desk names a kind per "
                                     "task, e.g. [tools_fail, handoff]); empty = every task")
    kind_weights: dict[str, float] = doc({}, "the pool's mix by meta.kind: {by_name: 3} makes by_name tasks three "
                                             "times as many as each other kind (kinds not named weigh 1); empty = "
                                             "the generator's (or file's) own mix. Weights only; kinds filters")

    def validate(self) -> list[str]:
        from envs import ENVS

        problems = []
        if self.path is None and self.env not in ENVS:
            problems.append(f"env: unknown env {self.env!r}. Fix: use one of {sorted(ENVS)}")
        if self.path is None and self.split not in ("train", "val", "test"):
            problems.append(f"split: unknown split {self.split!r}. Fix: use train, val or test")
        if self.num_tasks < 1:
            problems.append(f"num_tasks: must be >= 1, got {self.num_tasks}. Fix: set a positive integer")
        bad = {kind: w for kind, w in self.kind_weights.items() if not isinstance(w, (int, float)) or w <= 0}
        if bad:
            problems.append(f"kind_weights: weights must be numbers > 0, got {bad}. Fix: give positive weights; "
                            f"drop a kind with tasks.kinds")
        if self.kinds and (outside := sorted(set(self.kind_weights) - set(self.kinds))):
            problems.append(f"kind_weights: {', '.join(outside)} not in tasks.kinds {list(self.kinds)}, so no task "
                            f"of it is kept. Fix: add it to tasks.kinds or drop its weight")
        return problems
