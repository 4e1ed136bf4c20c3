"""jobs.id_audit: per-kind counts of episodes that invented an id, read back from an episode Parquet."""

from __future__ import annotations

import dataclasses
import json

import pytest

from actors.trajectory import write_parquet
from jobs.id_audit import count_by_kind, main
from tests.rewards.support_play import expert_played, one_task_per_kind, played

pytestmark = pytest.mark.timeout(60)


def test_counts_by_kind_from_a_parquet(tmp_path, capsys):
    by_kind = one_task_per_kind()
    name_task, order_task = by_kind["by_name"], by_kind["refund_by_id"]
    invented = played(name_task, [("lookup_order", {"order_id": "ORD-10234"})], "No such order.")
    expert = expert_played(order_task)
    episodes = [dataclasses.replace(t, task_extra=json.dumps({"meta": task.meta_value()}),
                                    messages=[{"role": "user", "content": task.prompt}, *t.messages[2:]],
                                    reward_breakdown={"outcome": outcome})
                for t, task, outcome in ((invented, name_task, 0.0), (expert, order_task, 1.0))]
    path = write_parquet(episodes, tmp_path / "episodes.parquet")
    assert count_by_kind(episodes) == {"by_name": (1, 1, 0), "refund_by_id": (1, 0, 0)}
    main([str(path)])
    out = capsys.readouterr().out
    assert "by_name               1 episodes,    1 with an invented id (0 of them solved)" in out
    with pytest.raises(SystemExit, match="usage"):
        main([])
    with pytest.raises(SystemExit, match="no episode file at .*nope.parquet. Fix: pass Parquet files a run wrote"):
        main([str(path), str(tmp_path / "nope.parquet")])
    (tmp_path / "notes.parquet").write_text("not parquet")
    with pytest.raises(SystemExit, match="notes.parquet is not an episode file .*Fix: pass the episodes a run wrote"):
        main([str(tmp_path / "notes.parquet")])
