"""Which adapter versions a rollout worker may drop: the newest ``keep``, the served one and any in use stay."""

from __future__ import annotations

import pytest

from actors.adapters import AdapterStore

pytestmark = pytest.mark.timeout(30)
FILES = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"weights"}


def store_with(tmp_path, versions, keep=2):
    store = AdapterStore(tmp_path, keep=keep)
    for v in versions:
        store.put(v, {**FILES, "adapter_model.safetensors": b"w%d" % v})
    return store


def test_beyond_keep_the_oldest_idle_versions_go(tmp_path):
    store = store_with(tmp_path, [1, 2, 3, 4])
    assert [v.version for v in store.evictable(current=4)] == [1, 2]


def test_the_served_version_and_versions_in_use_stay(tmp_path):
    store = store_with(tmp_path, [1, 2, 3, 4])
    store.acquire(1)
    assert [v.version for v in store.evictable(current=2)] == []  # 3, 4 newest; 2 served; 1 in use
    store.release(1)
    assert [v.version for v in store.evictable(current=2)] == [1]


def test_keep_zero_drops_every_idle_version_even_numbers_above_the_current(tmp_path):
    store = store_with(tmp_path, [3, 9001, 9002])
    store.acquire(9001)
    assert [v.version for v in store.evictable(current=0, keep=0)] == [3, 9002]
    for v in store.evictable(current=0, keep=0):
        store.drop(v.version)
    assert sorted(store.versions) == [9001]
    assert not any(p.name.startswith(("v3-", "v9002-")) for p in tmp_path.iterdir())  # off the disk too
