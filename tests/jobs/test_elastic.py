"""How many rollout workers the next step gets (jobs/elastic.py): the control file first, then room in the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.config import RolloutConfig
from jobs.elastic import CONTROL_FILE, desired_workers

pytestmark = pytest.mark.timeout(60)


def test_desired_workers_reads_the_control_file_then_the_room(tmp_path: Path):
    cfg = RolloutConfig(max_workers=2)
    assert desired_workers(tmp_path, 1, cfg, {"CPU": 4}) == 2  # room and a ceiling above: grow by one
    assert desired_workers(tmp_path, 1, cfg, {"CPU": 0.5}) == 1  # no room for a 1-CPU worker
    (tmp_path / CONTROL_FILE).write_text("3\n")
    assert desired_workers(tmp_path, 1, cfg, {}) == 3  # by hand, whatever the room
    (tmp_path / CONTROL_FILE).write_text("two")
    assert desired_workers(tmp_path, 1, cfg, {"CPU": 0}) == 1  # unreadable: ignored, said so
    gpu = RolloutConfig(num_gpus_per_worker=1.0, max_workers=4)
    assert desired_workers(tmp_path / "x", 2, gpu, {"CPU": 8}) == 2  # a GPU worker needs a free GPU
    assert any("max_workers" in p for p in RolloutConfig(num_workers=2, max_workers=1).validate())
