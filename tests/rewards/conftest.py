"""Fixtures shared by the reward tests."""

from __future__ import annotations

import pytest

from envs.tasks import Task
from tests.rewards.support_play import one_task_per_kind


@pytest.fixture(scope="module")
def by_kind() -> dict[str, Task]:
    return one_task_per_kind()
