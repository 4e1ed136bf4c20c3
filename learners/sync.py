"""The learner's side of a verified adapter sync: choose a probe before the update, push and verify after it."""

from __future__ import annotations

from collections.abc import Sequence

from actors.trajectory import Trajectory

# After a restore there is no before/after pair: a fixed sequence checks the checksum and absolute logprobs.
RESTORE_PROBE = (list(range(1, 65)), list(range(63)), None, None)


def choose_probe(batch: Sequence[Trajectory], learner) -> tuple:
    """Before the update: the episode it will push hardest (largest |advantage|), the positions of its sampled
    tokens (where the policy moves), the learner's logprobs there now, and what the workers' logprobs there were:
    ``(version, behavior logprobs)`` when one version sampled the whole episode at temperature 1 (the probe's), so
    the pool need not ask the workers again (``RolloutPool.sync``); else None."""
    t = batch[int(learner.advantages(batch).abs().argmax())]
    ids = t.prompt_ids + t.completion_ids
    offset = len(t.prompt_ids) - 1
    positions = [offset + j for j, m in enumerate(t.loss_mask) if m]
    before = learner.probe_logprobs(ids)
    versions = {turn.policy_version for turn in t.turns} or {t.policy_version}
    sampled = (t.policy_version, list(t.behavior_logprobs)) \
        if learner.temperature == 1.0 and len(versions) == 1 and len(t.behavior_logprobs) == len(positions) else None
    return ids, positions, [before[i] for i in positions], sampled


def push_adapter(learner, pool, probe=None, *, skip_load: bool = False) -> dict:
    """Send the adapter to every rollout worker as a new version; the pool verifies and raises SyncError."""
    import ray

    from actors.adapters import checksum

    files = learner.adapter_files()
    ids, positions, before, sampled = probe or RESTORE_PROBE
    after = learner.probe_logprobs(ids)
    report = ray.get(pool.sync.remote(files, ids, positions, [after[i] for i in positions], before,
                                      skip_load=skip_load, sampled=sampled))
    assert report["checksum"] == checksum(files)
    return report
