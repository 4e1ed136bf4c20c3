"""A resumed run's logs: one line per step, and the lines of rolled-back steps kept beside them (no Ray here)."""

from __future__ import annotations

import json

import pytest

from jobs.metrics import MetricsLog, rewind

pytestmark = pytest.mark.timeout(30)


def _write(path, steps):
    path.write_text("".join(json.dumps({"step": s, "reward": s / 10}) + "\n" for s in steps))


def test_a_resume_moves_later_steps_aside_and_keeps_the_rest(tmp_path):
    _write(tmp_path / "metrics.jsonl", [1, 2, 3, 4])
    _write(tmp_path / "eval.jsonl", [0, 2, 4])
    log = MetricsLog(tmp_path, resume_step=2)
    log.write({"step": 3, "reward": 0.9})
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    rolled = [json.loads(line) for line in (tmp_path / "metrics.rolled_back.jsonl").read_text().splitlines()]
    assert rolled == [{"step": 3, "reward": 0.3}, {"step": 4, "reward": 0.4}]
    assert [json.loads(line)["step"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()] == [0, 2]


def test_nothing_to_rewind_leaves_the_files_alone(tmp_path):
    assert rewind(tmp_path / "metrics.jsonl", 5) == 0  # no file yet
    _write(tmp_path / "metrics.jsonl", [1, 2])
    before = (tmp_path / "metrics.jsonl").read_text()
    assert rewind(tmp_path / "metrics.jsonl", 2) == 0
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert not (tmp_path / "metrics.rolled_back.jsonl").exists()
