from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs.tasks import Task, TaskFileError, read_tasks, write_tasks

KNOWN = ["calculator"]
GOOD = {"task_id": "t0", "env": "calculator", "prompt": "What is 2 + 2?", "answer": "4", "meta": "{}"}


def write_rows(path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def problems(path) -> list[str]:
    with pytest.raises(TaskFileError) as info:
        read_tasks(path, KNOWN)
    return info.value.problems


def test_round_trip_keeps_extra_columns(tmp_path):
    tasks = [
        Task("a", "calculator", "What is 2 + 2?", "4", '{"split": "train"}', extra={"source": "gsm", "level": 3}),
        Task("b", "calculator", "What is 3 * 3?", "9", extra={"source": "mine", "level": 1}),
    ]
    write_tasks(tasks, tmp_path / "tasks.parquet")
    assert read_tasks(tmp_path / "tasks.parquet", KNOWN) == tasks
    assert pq.read_schema(tmp_path / "tasks.parquet").names == [
        "task_id",
        "env",
        "prompt",
        "answer",
        "meta",
        "source",
        "level",
    ]
    assert tasks[0].answer_value() == 4 and tasks[0].meta_value() == {"split": "train"}


def test_meta_column_is_optional(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "meta"}
    write_rows(tmp_path / "tasks.parquet", [row])
    assert read_tasks(tmp_path / "tasks.parquet", KNOWN)[0].meta == "{}"


def test_file_not_found_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        read_tasks(tmp_path / "nope.parquet", KNOWN)


def test_not_parquet(tmp_path):
    (tmp_path / "tasks.parquet").write_text("task_id,env\n")
    assert "cannot read as Parquet" in problems(tmp_path / "tasks.parquet")[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"task_id": ""}, "row 1: task_id is null or empty"),
        ({"task_id": None}, "row 1: task_id is null or empty"),
        ({"task_id": "t0"}, "row 1 (task_id 't0'): duplicate task_id, first used in row 0"),
        ({"env": "foo"}, "row 1 (task_id 't1'): unknown env 'foo'; known envs: calculator"),
        ({"answer": "not json"}, "row 1 (task_id 't1'): answer is not valid JSON"),
        ({"answer": None}, "row 1 (task_id 't1'): answer is not valid JSON"),
        ({"meta": "[1]"}, "row 1 (task_id 't1'): meta is not a JSON object"),
        ({"meta": "{bad"}, "row 1 (task_id 't1'): meta is not a JSON object"),
        ({"prompt": ""}, "row 1 (task_id 't1'): prompt is null or empty"),
    ],
)
def test_each_bad_row_is_one_problem_naming_the_row(tmp_path, change, expected):
    write_rows(tmp_path / "tasks.parquet", [GOOD, {**GOOD, "task_id": "t1", **change}])
    found = problems(tmp_path / "tasks.parquet")
    assert len(found) == 1 and found[0].startswith(f"tasks.parquet {expected}"), found
    assert "Fix:" in found[0]


def test_missing_column_and_wrong_type(tmp_path):
    write_rows(tmp_path / "tasks.parquet", [{"task_id": "t0", "env": "calculator", "prompt": "p", "meta": 3}])
    found = problems(tmp_path / "tasks.parquet")
    assert len(found) == 2
    assert found[0].startswith("missing required column(s) answer") and "task_id: string" in found[0]
    assert found[1].startswith("column 'meta' has type int64, expected string")


def test_all_problems_reported_together(tmp_path):
    rows = [GOOD, {**GOOD, "env": "foo"}, {**GOOD, "task_id": "t2", "answer": "{"}]
    rows += [{**GOOD, "task_id": f"x{i}", "env": "bar"} for i in range(30)]
    write_rows(tmp_path / "tasks.parquet", rows)
    with pytest.raises(TaskFileError) as info:
        read_tasks(tmp_path / "tasks.parquet", KNOWN)
    assert len(info.value.problems) == 33
    message = str(info.value)
    assert "row 1 (task_id 't0'): duplicate" in message and "row 1 (task_id 't0'): unknown env 'foo'" in message
    assert "row 2 (task_id 't2'): answer is not valid JSON" in message
    assert message.rstrip().endswith("... and 13 more")
