"""Preference pairs from scored trajectories: the training data of the Bradley–Terry reward model.

For each group (episodes of one task sampled together, ``Trajectory.group_id``), the best episode by reward is
*chosen* and the worst *rejected*; a group whose rewards are all equal gives no pair (a tie says nothing about
which is better). With ``length_tolerance`` the pair must also be length-matched, ``|len(chosen) -
len(rejected)| <= tolerance`` completion tokens: among the group's pairs with a reward gap, the one with the widest
gap that fits (the plain best vs worst when it fits); a group with none is dropped and counted. Length matching
keeps the model from learning "longer wins", the best-known way a reward model is gamed.

Text, as the policy saw it: ``prompt`` is ``envs.chat.render`` of the messages before the first assistant turn
(system with its tools, user) with the generation header; ``chosen`` / ``rejected`` are the rest of the rendering
(assistant turns, tool results, end-of-turn tokens). ``prompt + chosen`` is the whole episode's rendering.

Parquet columns: ``prompt, chosen, rejected: string`` (required), ``task_id, group_id: string`` and
``reward_chosen, reward_rejected: double`` (optional for files users bring; ``read_preferences`` fills them).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.trajectory import Trajectory, read_parquet
from envs.chat import render

__all__ = ["Preference", "PreferenceStats", "PreferenceFileError", "PREFERENCE_SCHEMA", "build_preferences",
           "pick_pair", "split_episode", "preferences_from_run", "write_preferences", "read_preferences"]

PREFERENCE_SCHEMA = pa.schema([
    pa.field("prompt", pa.string(), nullable=False), pa.field("chosen", pa.string(), nullable=False),
    pa.field("rejected", pa.string(), nullable=False), pa.field("task_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("reward_chosen", pa.float64()),
    pa.field("reward_rejected", pa.float64()),
])
_TEXT = ("prompt", "chosen", "rejected")
_OPTIONAL_TEXT = ("task_id", "group_id")
_REWARDS = ("reward_chosen", "reward_rejected")
_MAX_LINES = 20  # problems listed before "... and N more"
_COUNTERS = {"tie": "ties", "singleton": "singletons", "length_unmatched": "length_unmatched"}  # pick_pair reasons


@dataclass(frozen=True)
class Preference:
    prompt: str
    chosen: str
    rejected: str
    task_id: str = ""
    group_id: str = ""
    reward_chosen: float = 1.0
    reward_rejected: float = 0.0


@dataclass
class PreferenceStats:
    """What happened to each group: one pair, or why none."""

    groups: int = 0
    pairs: int = 0
    ties: int = 0  # every episode of the group had the same reward
    length_unmatched: int = 0  # rewards differed, but no pair was within the length tolerance
    singletons: int = 0  # one usable episode: nothing to compare
    errors_skipped: int = 0  # episodes with status "error" (the runner's failure, not the policy's choice)

    def add(self, other: PreferenceStats) -> PreferenceStats:
        return PreferenceStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class PreferenceFileError(ValueError):
    """A preference file that does not meet the contract; one line per problem, naming the row and the fix."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path, self.problems = str(path), list(problems)
        shown = self.problems[:_MAX_LINES]
        lines = [f"{self.path}: {len(self.problems)} problem(s) in the preference file:", *(f"  {p}" for p in shown)]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


# ---- choosing the pair ----


def pick_pair(rewards: Sequence[float], lengths: Sequence[int],
              tolerance: int | None = None) -> tuple[int, int] | str:
    """Indices ``(chosen, rejected)`` of one group, or why there is none: ``"singleton"``, ``"tie"`` or
    ``"length_unmatched"``. Best vs worst; with a tolerance, the widest reward gap among length-matched pairs
    (smallest length difference, then lowest indices, on equal gaps).

    >>> pick_pair([0.4, 1.4, -0.2], [80, 82, 95])
    (1, 2)
    >>> pick_pair([0.4, 1.4, -0.2], [80, 82, 95], tolerance=4)  # best vs worst differs by 13 tokens
    (1, 0)
    >>> pick_pair([1.0, 1.0], [10, 10]), pick_pair([1.0, 0.0], [10, 40], tolerance=8), pick_pair([1.0], [10])
    ('tie', 'length_unmatched', 'singleton')
    """
    if len(rewards) < 2:
        return "singleton"
    if max(rewards) == min(rewards):
        return "tie"
    best = None
    for i, (r_i, n_i) in enumerate(zip(rewards, lengths)):
        for j, (r_j, n_j) in enumerate(zip(rewards, lengths)):
            gap, diff = r_i - r_j, abs(n_i - n_j)
            if gap <= 0 or (tolerance is not None and diff > tolerance):
                continue
            key = (-gap, diff, i, j)
            if best is None or key < best:
                best = key
    return "length_unmatched" if best is None else (best[2], best[3])


def split_episode(messages: Sequence[dict]) -> tuple[str, str]:
    """``(prompt, completion)`` texts: the rendering up to the first assistant turn with the generation header, and
    the rest; their concatenation is the episode's rendering.

    >>> split_episode([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    ('<|im_start|>user\\n2+2?<|im_end|>\\n<|im_start|>assistant\\n', '4<|im_end|>\\n')
    """
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    prompt, full = render(messages[:first], add_generation_prompt=True), render(messages)
    if not full.startswith(prompt):
        raise ValueError("chat contract broken: the episode's rendering does not start with its prompt's rendering; "
                         "fix the chat template (envs/chat_template.jinja) so a turn only appends text")
    return prompt, full[len(prompt):]


def build_preferences(trajectories: Sequence[Trajectory], *,
                      length_tolerance: int | None = None) -> tuple[list[Preference], PreferenceStats]:
    """One pair per group of scored trajectories (module doc), in group order, and the counts of what was skipped.

    Lengths are completion tokens (``len(completion_ids)``: the policy's and the runner's tokens after the prompt).
    """
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    stats = PreferenceStats()
    for t in trajectories:
        if t.status == "error":
            stats.errors_skipped += 1
            groups.setdefault(t.group_id, [])
        else:
            groups[t.group_id].append(t)
    pairs = []
    for group_id, members in groups.items():
        stats.groups += 1
        members = sorted(members, key=lambda t: t.sample_index)
        picked = pick_pair([float(t.reward) for t in members], [len(t.completion_ids) for t in members],
                           length_tolerance)
        if isinstance(picked, str):
            counter = _COUNTERS[picked]
            setattr(stats, counter, getattr(stats, counter) + 1)
            continue
        chosen, rejected = members[picked[0]], members[picked[1]]
        prompt, chosen_text = split_episode(chosen.messages)
        rejected_prompt, rejected_text = split_episode(rejected.messages)
        if rejected_prompt != prompt:
            raise ValueError(f"group {group_id!r}: its episodes start from different prompts, so they are not one "
                             "task's samples. Fix: give each task's samples their own group_id")
        pairs.append(Preference(prompt, chosen_text, rejected_text, chosen.task_id, group_id,
                                float(chosen.reward), float(rejected.reward)))
        stats.pairs += 1
    return pairs, stats


def preferences_from_run(path: str | os.PathLike, *,
                         length_tolerance: int | None = None) -> tuple[list[Preference], PreferenceStats]:
    """Pairs from a training or rollout run: ``<run>/trajectories/*.parquet`` (or a directory of Parquet files, or
    one file). Each file is one step's batch, grouped on its own, so a task sampled at several steps gives a pair
    per step, each from one policy version."""
    path = Path(path)
    if path.is_dir() and (path / "trajectories").is_dir():
        path = path / "trajectories"
    files = [path] if path.is_file() else sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no trajectories at {path}: expected a run directory with trajectories/*.parquet, a "
                                "directory of Parquet files or one file. Fix: point from_trajectories at the run "
                                "directory that jobs.train / jobs.rollout printed")
    pairs, stats = [], PreferenceStats()
    for f in files:
        more, counts = build_preferences(read_parquet(f), length_tolerance=length_tolerance)
        pairs += more
        stats = stats.add(counts)
    return pairs, stats


# ---- Parquet ----


def write_preferences(pairs: Sequence[Preference], path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename) in ``PREFERENCE_SCHEMA``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.Table.from_pylist([asdict(p) for p in pairs], schema=PREFERENCE_SCHEMA), tmp)
    tmp.replace(path)
    return path


def read_preferences(path: str | os.PathLike) -> list[Preference]:
    """Read and validate a preference file; PreferenceFileError lists every problem (row and fix) at once.

    Without ``task_id`` a row's prompt stands in for it (held-out splits are by task: same prompt, same side);
    without rewards, chosen counts 1.0 and rejected 0.0.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}. Fix: check the path, or build one with "
                                "rewards.preferences.write_preferences / from_trajectories")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise PreferenceFileError(path, [f"cannot read as Parquet ({type(e).__name__}: {e}). Fix: write it with "
                                         "rewards.preferences.write_preferences or pyarrow"]) from e
    problems = _column_problems(table)
    if problems:
        raise PreferenceFileError(path, problems)
    pairs = []
    for i, row in enumerate(table.to_pylist()):
        found = _row_problems(row)
        problems += [f"row {i}: {p}" for p in found]
        if not found:
            pairs.append(Preference(row["prompt"], row["chosen"], row["rejected"],
                                    row.get("task_id") or row["prompt"], row.get("group_id") or "",
                                    *(float(row[k]) if row.get(k) is not None else d for k, d in zip(_REWARDS,
                                                                                                     (1.0, 0.0)))))
    if problems:
        raise PreferenceFileError(path, problems)
    if not pairs:
        raise PreferenceFileError(path, ["no rows. Fix: a preference file needs at least one pair"])
    return pairs


def _column_problems(table: pa.Table) -> list[str]:
    names, problems = table.column_names, []
    missing = [n for n in _TEXT if n not in names]
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}; the file has {', '.join(names) or 'none'}. "
                        "Fix: write prompt, chosen, rejected as strings (write_preferences does)")
    for name in (*_TEXT, *_OPTIONAL_TEXT):
        t = table.schema.field(name).type if name in names else None
        if t is not None and not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            problems.append(f"column {name!r} has type {t}, expected string. Fix: store the rendered text as a string")
    for name in _REWARDS:
        t = table.schema.field(name).type if name in names else None
        if t is not None and not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            problems.append(f"column {name!r} has type {t}, expected a number. Fix: store the episode reward as "
                            "float64")
    return problems


def _row_problems(row: dict) -> list[str]:
    found = []
    for name in _TEXT:
        if not row.get(name):
            found.append(f"{name} is null or empty. Fix: give the rendered "
                         + ("prompt (system + user turns with the generation header)" if name == "prompt"
                            else "completion text") + ", or drop the row")
    if row.get("chosen") and row.get("chosen") == row.get("rejected"):
        found.append("chosen and rejected are the same text: the pair says nothing. Fix: drop the row")
    low, high = row.get("reward_rejected"), row.get("reward_chosen")
    if low is not None and high is not None and low > high:
        found.append(f"reward_rejected {low} > reward_chosen {high}: the pair is reversed. Fix: swap chosen and "
                     "rejected (and their rewards)")
    return found
