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


def test_kind_weights_set_the_pools_mix():
    cfg = TaskConfig(env="support_desk", num_tasks=36, kind_weights={"by_name": 7})
    tasks = load_tasks(cfg)
    kinds = [t.meta_value()["kind"] for t in tasks]
    assert len(tasks) == 36 and kinds.count("by_name") == 21  # 36 * 7/12; each of the five others 3
    assert all(kinds.count(k) == 3 for k in set(kinds) - {"by_name"}) and len(set(kinds)) == 6
    assert [t.task_id for t in tasks] == [t.task_id for t in load_tasks(cfg)]  # seeded: the same every time
    assert len({t.task_id for t in tasks}) == 36  # distinct tasks, not repeats
    only_two = load_tasks(TaskConfig(env="support_desk", num_tasks=8, kinds=("by_name", "handoff"),
                                     kind_weights={"handoff": 3}))
    assert [t.meta_value()["kind"] for t in only_two].count("handoff") == 6 and _kinds(only_two) == {"by_name",
                                                                                                    "handoff"}


def test_kind_weights_on_a_file_name_what_is_short(tmp_path):
    path = tmp_path / "tasks.parquet"
    write_tasks(load_tasks(TaskConfig(env="support_desk", num_tasks=30)), path)
    with pytest.raises(ValueError, match=r"too few tasks of some kinds for 30 tasks.*'by_name': '\d+ of 25'.*"
                                         r"Fix: lower tasks.num_tasks"):
        load_tasks(TaskConfig(path=str(path), num_tasks=30, kind_weights={"by_name": 25}))
    with pytest.raises(ValueError, match=r"kind_weights: no task of kind refund_everything.*Fix: weigh kinds"):
        load_tasks(TaskConfig(path=str(path), num_tasks=6, kind_weights={"refund_everything": 2}))


def test_kind_weights_from_an_override_and_bad_weights_named():
    cfg = load_config(RunConfig, None, ["tasks.env=support_desk", "tasks.kind_weights={by_name: 3}"])
    assert cfg.tasks.kind_weights == {"by_name": 3}
    with pytest.raises(ValueError, match=r"tasks.kind_weights: weights must be numbers > 0.*Fix"):
        load_config(RunConfig, None, ["tasks.env=support_desk", "tasks.kind_weights={by_name: 0}"])
    with pytest.raises(ValueError, match=r"tasks.kind_weights: by_name not in tasks.kinds \['handoff'\].*Fix"):
        load_config(RunConfig, None, ["tasks.env=support_desk", "tasks.kinds=[handoff]",
                                      "tasks.kind_weights={by_name: 2}"])
