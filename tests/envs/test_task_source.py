"""``tasks.kinds``: a run can train on some kinds of an env's tasks (a curriculum), from the generator or a file."""

from __future__ import annotations

import pytest

from envs.config import TaskConfig
from envs.task_source import load_tasks
from envs.tasks import write_tasks
from jobs.config import RunConfig
from jobs.config_loader import load_config


def _kinds(tasks) -> set:
    return {t.meta_value()["kind"] for t in tasks}


def test_generated_tasks_of_the_kinds_asked():
    cfg = TaskConfig(env="support_desk", num_tasks=12, kinds=("tools_fail", "handoff"))
    tasks = load_tasks(cfg)
    assert len(tasks) == 12 and _kinds(tasks) == {"tools_fail", "handoff"}
    assert [t.task_id for t in tasks] == [t.task_id for t in load_tasks(cfg)]  # seeded: the same every time
    everything = load_tasks(TaskConfig(env="support_desk", num_tasks=12))
    assert len(_kinds(everything)) > 2


def test_a_task_file_is_filtered_the_same_way(tmp_path):
    path = tmp_path / "tasks.parquet"
    write_tasks(load_tasks(TaskConfig(env="support_desk", num_tasks=30)), path)
    tasks = load_tasks(TaskConfig(path=str(path), num_tasks=30, kinds=("nonexistent_order",)))
    assert tasks and _kinds(tasks) == {"nonexistent_order"}


def test_an_unknown_kind_names_the_kinds_there_are():
    with pytest.raises(ValueError, match=r"no task of kind refund_everything.*Fix: use kinds these tasks have: "
                                         r"\[.*'handoff'.*\]"):
        load_tasks(TaskConfig(env="support_desk", num_tasks=4, kinds=("refund_everything",)))
    with pytest.raises(ValueError, match="none \\(its tasks name no meta.kind\\)"):
        load_tasks(TaskConfig(env="calculator", num_tasks=4, kinds=("arithmetic",)))


def test_kinds_from_an_override():
    cfg = load_config(RunConfig, None, ["tasks.env=support_desk", "tasks.kinds=[tools_fail, handoff]"])
    assert cfg.tasks.kinds == ("tools_fail", "handoff")
