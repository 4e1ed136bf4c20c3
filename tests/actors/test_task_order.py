"""The task order: epochs of a seeded permutation; stratified by kind, every step's tasks follow the pool's mix."""

import random
from collections import Counter
from pathlib import Path

import pytest

from actors.task_order import TaskCursor, resume_mismatch, strata_for, stratified_order
from envs.config import TaskConfig
from envs.task_source import kinds_of, load_tasks

pytestmark = pytest.mark.timeout(60)

# run 19's pool shape (docs/envs/support_desk.md): by_name and tools_fail weighted 3, the other four kinds 1
MIX = {"by_name": 77, "tools_fail": 77, "already_refunded": 26, "handoff": 26, "nonexistent_order": 25,
       "refund_by_id": 25}


def pool_kinds(seed: int = 3) -> list[str]:
    kinds = [k for k, n in MIX.items() for _ in range(n)]
    random.Random(seed).shuffle(kinds)  # the pool's own order is not sorted by kind
    return kinds


def worst_window_error(order: list[int], kinds: list[str], width: int) -> float:
    """The largest gap, over windows of ``width`` consecutive positions and kinds, between a kind's count in the
    window and its share of the pool."""
    total = Counter(kinds)
    worst = 0.0
    for start in range(len(order) - width + 1):
        have = Counter(kinds[i] for i in order[start:start + width])
        worst = max(worst, *(abs(have[k] - width * n / len(kinds)) for k, n in total.items()))
    return worst


def test_the_plain_order_is_the_seeded_shuffle_runs_have_always_used():
    """Off (no strata), the order is unchanged, so existing runs resume and replay exactly as before."""
    cursor = TaskCursor(10, seed=7)
    expected = []
    for epoch in range(3):
        order = list(range(10))
        random.Random(7 * 1_000_003 + epoch).shuffle(order)
        expected += order
    assert cursor.take(30) == expected


def test_a_stratified_epoch_is_a_permutation_that_follows_the_seed():
    kinds = pool_kinds()
    a, b = TaskCursor(len(kinds), seed=1, strata=tuple(kinds)), TaskCursor(len(kinds), seed=1, strata=tuple(kinds))
    first, second = a.take(len(kinds)), a.take(len(kinds))
    assert sorted(first) == sorted(second) == list(range(len(kinds)))
    assert first != second  # a new order each epoch
    assert b.take(2 * len(kinds)) == first + second
    assert TaskCursor(len(kinds), seed=2, strata=tuple(kinds)).take(len(kinds)) != first


@pytest.mark.parametrize("width", [3, 6, 8])
def test_every_window_of_a_stratified_order_holds_each_kind_in_its_share(width):
    """Within about one task of its share in every window of a step's size (1.2 at most over 20 seeds), where a plain
    shuffle strays by 2-8 (three tools_fail in a row, ...)."""
    kinds = pool_kinds()
    stratified = stratified_order(kinds, random.Random(0))
    plain = list(range(len(kinds)))
    random.Random(0).shuffle(plain)
    assert worst_window_error(stratified, kinds, width) <= 1.5
    assert worst_window_error(plain, kinds, width) >= 2.0


def test_resume_from_a_position_replays_the_same_stratified_tasks():
    kinds = tuple(pool_kinds())
    whole = TaskCursor(len(kinds), seed=5, strata=kinds).take(400)
    resumed = TaskCursor(len(kinds), seed=5, position=100, strata=kinds)
    assert resumed.take(300) == whole[100:]
    resumed.seed = 6  # load_cursor_state may set another seed: the cached epoch order must not be reused
    assert resumed.take(5) == TaskCursor(len(kinds), seed=6, position=400, strata=kinds).take(5)


def test_strata_are_the_tasks_kinds_when_asked_and_a_pool_without_kinds_is_an_error():
    tasks = load_tasks(TaskConfig(env="support_desk", num_tasks=24, split="train", seed=1))
    assert strata_for(kinds_of(tasks), stratify=False) is None
    assert strata_for(kinds_of(tasks), stratify=True) == tuple(kinds_of(tasks))
    with pytest.raises(ValueError, match=r"train.stratify_kinds: none of the 4 tasks names a meta.kind.*Fix"):
        strata_for([None] * 4, stratify=True)
    with pytest.raises(ValueError, match="3 strata for 4 tasks"):
        TaskCursor(4, seed=0, strata=("a", "b", "c"))


def test_doctests():
    import doctest

    from actors import task_order

    assert doctest.testmod(task_order).failed == 0


def test_a_checkpoint_cursor_goes_on_only_over_the_same_pool_and_order():
    kinds = tuple(pool_kinds())
    shuffled, stratified = TaskCursor(len(kinds), seed=1), TaskCursor(len(kinds), seed=1, strata=kinds)
    saved = {"position": 6, "seed": 1, "num_tasks": len(kinds), "order": "shuffled"}
    assert resume_mismatch(saved, shuffled) is None
    assert resume_mismatch({"position": 6, "seed": 1}, stratified) is None  # saved before the order was recorded
    assert "in a shuffled order; this run has 256 tasks in a stratified order" in resume_mismatch(saved, stratified)
    assert "walks 256 tasks" in resume_mismatch(saved, TaskCursor(128, seed=1))
    assert "Fix: resume with the run's own task settings" in resume_mismatch(saved, TaskCursor(128, seed=1))


def _shuffled_checkpoint(run_dir: Path) -> Path:
    """A step-2 checkpoint in ``run_dir`` whose task cursor walked 24 tasks in a shuffled order (seed 1)."""
    import json

    step = run_dir / "checkpoints" / "step_000002"
    step.mkdir(parents=True)
    cursor = json.dumps({"position": 6, "seed": 1, "num_tasks": 24, "order": "shuffled"}).encode()
    (step / "cursor.json").write_bytes(cursor)
    (step / "step.json").write_text(json.dumps({"step": 2, "files": {"cursor.json": len(cursor)}}))
    return step


def test_train_refuses_to_resume_a_run_under_another_order_and_keeps_its_config(tmp_path, capsys):
    """jobs.train --resume with train.stratify_kinds flipped: exit 2 before Ray starts, the run's files untouched."""
    from jobs.train import main

    step = _shuffled_checkpoint(tmp_path)
    (tmp_path / "config.yaml").write_text("the run's own config\n")
    config = Path(__file__).resolve().parents[2] / "configs" / "train_support_desk.yaml"
    argv = ["--config", str(config), "--resume", f"run.run_dir={tmp_path}",
            "tasks.num_tasks=24", "tasks.seed=1"]
    assert main([*argv, "train.stratify_kinds=true"]) == 2
    err = capsys.readouterr().err
    assert f"--resume {step}" in err and "24 tasks in a shuffled order; this run has 24 tasks in a stratified" in err
    assert (tmp_path / "config.yaml").read_text() == "the run's own config\n"


def test_train_resume_without_config_loads_the_runs_own_config(tmp_path, capsys):
    """jobs.train --resume run.run_dir=R with no --config reads R/config.yaml, not configs/train.yaml: here the
    run's config stratifies 24 support_desk tasks while its checkpoint walked them shuffled, and the refusal names
    the run's settings (the default config has other tasks and no stratification)."""
    import yaml

    from jobs.train import main

    _shuffled_checkpoint(tmp_path)
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "train_support_desk.yaml").read_text())
    config["tasks"].update(num_tasks=24, seed=1)
    config["train"]["stratify_kinds"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["--resume", f"run.run_dir={tmp_path}"]) == 2
    assert "24 tasks in a shuffled order; this run has 24 tasks in a stratified" in capsys.readouterr().err


def test_train_resume_of_a_directory_that_is_no_run_is_refused_and_starts_nothing(tmp_path, capsys):
    """A mistyped --resume run.run_dir (or none) used to start a fresh configs/train.yaml run there: now exit 2
    naming the path and the fix, before Ray starts, and no directory is made."""
    from jobs.train import main

    typo = tmp_path / "grpo-sd-typo"
    assert main(["--resume", f"run.run_dir={typo}"]) == 2
    err = capsys.readouterr().err
    assert f"--resume run.run_dir={typo}: no config.yaml there" in err and "Fix:" in err
    assert not typo.exists()
    assert main(["--resume"]) == 2
    assert "--resume without run.run_dir" in capsys.readouterr().err


def test_train_doctests():
    import doctest

    import jobs.train

    assert doctest.testmod(jobs.train).failed == 0
