"""Session-wide fixtures: one Ray cluster, one vLLM rollout worker, one tokenizer (DESIGN.md test budget).

Engine start costs ~40 s here, so every integration test shares the one worker; tests that load adapters use
version numbers of their own and leave the worker serving version 0 afterwards.
"""

from __future__ import annotations

import os

import pytest

# A 2-core machine: the local cluster advertises 4 logical CPUs so a rollout worker, a reward actor and learner
# workers can all be placed (they mostly wait on each other); said plainly in docs/testing.md.
TEST_RAY_CPUS = 4


@pytest.fixture(scope="session")
def model_path() -> str:
    from cluster.model import resolve_model

    return str(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # address="local": always a fresh cluster, never one named by a stale /tmp/ray/ray_current_cluster
    ray.init(address="local", num_cpus=TEST_RAY_CPUS, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def rollout_cfg():
    from actors.config import RolloutConfig

    # LoRA serving: these tests hold several adapter versions at once. Merged serving (the CPU default) is what
    # the end-to-end learning test runs, every sync verified against the learner.
    return RolloutConfig(kv_cache_gib=1.0, max_model_len=2048, max_num_seqs=32, max_loras=2, keep_versions=2,
                         max_lora_rank=16, max_turns=3, max_tokens_per_turn=96, max_total_tokens=900,
                         adapter_serving="lora")


_SESSION_ENGINES: list = []  # the session's rollout worker, so the end-to-end test can release it


def pytest_collection_modifyitems(config, items):
    """The end-to-end chain (marker e2e) runs last: it starts a Ray head, an engine and a learner of its own, and
    on a 23 GiB machine that only fits once the session's engine is gone (release_session_engine)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@pytest.fixture(scope="session")
def rollout_worker(ray_cluster, model_path, rollout_cfg):
    from actors.remote import start_rollout_workers

    (worker,) = start_rollout_workers(model_path, rollout_cfg)
    _SESSION_ENGINES.append(worker)
    yield worker
    if worker in _SESSION_ENGINES:
        ray_cluster.kill(worker)


@pytest.fixture
def release_session_engine():
    """Kill the session's rollout worker (e2e tests run last, nothing needs it after) and hand freed heap back to
    the OS, so the machine holds one engine and one learner, not two engines."""
    import ctypes
    import gc

    import ray

    while _SESSION_ENGINES:
        ray.kill(_SESSION_ENGINES.pop())
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


@pytest.fixture(scope="session")
def sft_adapter(model_path) -> str:
    """The test session's one SFT warm-start adapter (DESIGN.md test budget): the shipped recipe, exactly what
    ``python -m jobs.train`` warm-starts from, cached under AGENTRL_CACHE by recipe hash.

    CI runs with a checkout-local AGENTRL_CACHE, so a fresh clone trains it (a few minutes) like a new machine.
    """
    from jobs.warm_start import DEFAULT_RECIPE, sft_recipe_adapter

    return str(sft_recipe_adapter(DEFAULT_RECIPE, "smollm2-135m", log=lambda *a, **k: None))
