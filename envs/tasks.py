"""The task contract: one Parquet row per task, validated once at load so a bad file fails before any actor starts.

Users bring their own task files, so ``read_tasks`` reports every problem at once, each naming the row and
the fix, rather than stopping at the first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Task", "TASK_SCHEMA", "TaskFileError", "write_tasks", "read_tasks", "tasks_to_rows", "rows_to_tasks"]

TASK_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("env", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("meta", pa.string()),
    ]
)
_CORE = tuple(TASK_SCHEMA.names)
_REQUIRED = ("task_id", "env", "prompt", "answer")  # meta may be left out: it defaults to "{}"
_MAX_LINES = 20  # problems listed before "... and N more": enough to see the pattern, short enough to read


@dataclass(frozen=True)
class Task:
    """One task: a prompt for ``env`` and a JSON ground truth its verifier understands."""

    task_id: str
    env: str
    prompt: str
    answer: str
    meta: str = "{}"
    extra: dict = field(default_factory=dict)

    def answer_value(self) -> Any:
        """The ground truth, decoded from JSON."""
        return json.loads(self.answer)

    def meta_value(self) -> dict:
        """The meta object (split, difficulty, db seed, ...); {} when absent."""
        value = json.loads(self.meta) if self.meta else {}
        return value if isinstance(value, dict) else {}


class TaskFileError(ValueError):
    """A task file that does not meet the contract; ``problems`` holds one line per problem."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        shown = self.problems[:_MAX_LINES]
        more = len(self.problems) - len(shown)
        lines = [f"{self.path}: {len(self.problems)} problem(s) in the task file:", *(f"  {p}" for p in shown)]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


def tasks_to_rows(tasks: Iterable[Task]) -> list[dict]:
    """Flatten tasks to rows; extra fields become their own columns."""
    rows = []
    for t in tasks:
        clash = set(t.extra) & set(_CORE)
        if clash:
            raise ValueError(f"task {t.task_id!r}: extra keys {sorted(clash)} collide with the task columns {_CORE}")
        rows.append(
            {"task_id": t.task_id, "env": t.env, "prompt": t.prompt, "answer": t.answer, "meta": t.meta, **t.extra}
        )
    return rows


def rows_to_tasks(rows: Iterable[Mapping[str, Any]]) -> list[Task]:
    """Build tasks from rows without validation (``read_tasks`` validates); unknown columns go to ``extra``."""
    return [
        Task(
            task_id=row["task_id"],
            env=row["env"],
            prompt=row["prompt"],
            answer=row["answer"],
            meta=row.get("meta") or "{}",
            extra={k: v for k, v in row.items() if k not in _CORE},
        )
        for row in rows
    ]


def write_tasks(tasks: Iterable[Task], path: str | os.PathLike) -> None:
    """Write tasks as Parquet in ``TASK_SCHEMA``, extra columns after the core ones (types inferred)."""
    rows = tasks_to_rows(tasks)
    extra_names: list[str] = []
    for row in rows:
        extra_names += [k for k in row if k not in _CORE and k not in extra_names]
    columns = {name: pa.array([r[name] for r in rows], type=pa.string()) for name in _CORE}
    columns.update({name: pa.array([r.get(name) for r in rows]) for name in extra_names})
    fields = list(TASK_SCHEMA) + [pa.field(n, columns[n].type) for n in extra_names]
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), path)


def read_tasks(path: str | os.PathLike, known_envs: Collection[str]) -> list[Task]:
    """Read and validate a task file (Parquet, or JSONL when it ends in .jsonl); raise TaskFileError listing every
    problem, FileNotFoundError if absent."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"task file not found: {p} (absolute: {p.absolute()}). Fix: check the path in the "
            "config, or write one with envs.write_tasks / the env's generate_tasks"
        )
    if p.suffix == ".jsonl":
        return _read_jsonl(p, known_envs)
    try:
        table = pq.read_table(p)
    except Exception as e:
        raise TaskFileError(
            p,
            [
                f"cannot read as Parquet ({type(e).__name__}: {e}). Fix: write the file with "
                f"envs.write_tasks or pyarrow.parquet.write_table"
            ],
        ) from e
    problems = _column_problems(table)
    usable = {n for n in _CORE if n in table.column_names and _is_string(table.schema.field(n).type)}
    if "meta" in table.column_names and pa.types.is_null(table.schema.field("meta").type):
        usable.add("meta")
    rows = table.to_pylist()
    problems += _row_problems(p.name, rows, usable, sorted(known_envs))
    if problems:
        raise TaskFileError(p, problems)
    return rows_to_tasks(rows)


def _read_jsonl(p: Path, known_envs: Collection[str]) -> list[Task]:
    """A JSONL task file: one JSON object per line with the task columns, checked like a Parquet file. ``answer``
    and ``meta`` hold JSON text as in Parquet; a non-string value there (``"answer": 42``) is taken as that JSON."""
    rows, problems, lines = [], [], []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            problems.append(f"{p.name} line {number}: not valid JSON ({str(e)[:120]}). Fix: one JSON object per line")
            continue
        if not isinstance(row, dict):
            problems.append(f"{p.name} line {number}: a JSON {type(row).__name__}, not an object. Fix: write "
                            '{"task_id": ..., "env": ..., "prompt": ..., "answer": ...} on each line')
            continue
        for key in ("answer", "meta"):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                row[key] = json.dumps(row[key])
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            problems.append(f"{p.name} line {number}: missing {', '.join(missing)}. Fix: every task needs "
                            f"{', '.join(_REQUIRED)} (meta optional)")
        for key in ("task_id", "env", "prompt"):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                problems.append(f"{p.name} line {number}: {key} is a JSON {type(row[key]).__name__}, not a string. "
                                f"Fix: quote it")
        rows.append(row)
        lines.append(number)
    problems += _row_problems(p.name, rows, set(_CORE), sorted(known_envs), lines)
    if problems:
        raise TaskFileError(p, problems)
    return rows_to_tasks(rows)


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _column_problems(table: pa.Table) -> list[str]:
    expected = ", ".join(f"{f.name}: string" for f in TASK_SCHEMA) + " (meta optional)"
    names = table.column_names
    missing = [n for n in _REQUIRED if n not in names]
    problems = []
    if missing:
        problems.append(
            f"missing required column(s) {', '.join(missing)}; the file has {', '.join(names) or 'none'}. "
            f"Fix: tasks need the columns {expected}"
        )
    for name in _CORE:
        if name not in names:
            continue
        t = table.schema.field(name).type
        if not _is_string(t) and not (name == "meta" and pa.types.is_null(t)):
            problems.append(
                f"column {name!r} has type {t}, expected string. Fix: store it as a string"
                + (" holding JSON (json.dumps the value)" if name in ("answer", "meta") else "")
            )
    return problems


def _row_problems(fname: str, rows: list[dict], usable: set[str], known_envs: list[str],
                  lines: list[int] | None = None) -> list[str]:
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        tid = row.get("task_id") if "task_id" in usable else None
        where = f"{fname} row {i}" + (f" (line {lines[i]})" if lines else "") + (f" (task_id {tid!r})" if tid else "")
        problems += [f"{where}: {what}. Fix: {fix}" for what, fix in _check_row(row, i, usable, known_envs, first_seen)]
    return problems


def _check_row(
    row: dict, i: int, usable: set[str], known_envs: list[str], first_seen: dict[str, int]
) -> list[tuple[str, str]]:
    """(what is wrong, the fix) for each problem in one row; records the row's task_id in ``first_seen``."""
    found = []
    tid = row.get("task_id")
    if "task_id" in usable:
        if not tid:
            found.append(("task_id is null or empty", "give every task a unique non-empty task_id"))
        elif tid in first_seen:
            found.append((f"duplicate task_id, first used in row {first_seen[tid]}", "make task_ids unique"))
        else:
            first_seen[tid] = i
    if "env" in usable and row.get("env") not in known_envs:
        known = ", ".join(known_envs) or "none"
        found.append((f"unknown env {row.get('env')!r}; known envs: {known}", "set env to one of the known envs"))
    if "prompt" in usable and not row.get("prompt"):
        found.append(("prompt is null or empty", "write the user's request in prompt"))
    err = _json_error(row.get("answer")) if "answer" in usable else None
    if err:
        found.append((f"answer is not valid JSON ({err})", "store json.dumps(ground_truth), e.g. '42' or '\"Paris\"'"))
    err = _json_error(row["meta"], want_object=True) if "meta" in usable and row.get("meta") else None
    if err:
        found.append(
            (
                f"meta is not a JSON object ({err})",
                'store json.dumps of a dict, e.g. \'{"split": "train"}\', or leave it empty',
            )
        )
    return found


def _json_error(text: str | None, want_object: bool = False) -> str | None:
    if text is None:
        return "it is null"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        return str(e)[:120]
    if want_object and not isinstance(value, dict):
        return f"got a JSON {type(value).__name__}"
    return None
