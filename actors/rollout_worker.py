"""The rollout worker: one vLLM engine, the adapter versions it serves, and the episode runner.

A plain class (unit-testable without Ray); ``actors.remote`` makes it a Ray actor in one place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from actors.adapters import AdapterStore, adapter_rank
from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, run_episodes
from actors.trajectory import Trajectory
from envs.tasks import Task


def node_local_dir(worker_index: int) -> Path:
    """Adapters are written here before vLLM loads them: RAM-backed /dev/shm when the node has it."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"agentrl-adapters-w{worker_index}-", dir=base))


class RolloutWorker:
    def __init__(self, model_path: str, cfg: RolloutConfig, *, worker_index: int = 0):
        from actors.vllm_engine import VLLMBackend  # vLLM imports take seconds; keep them off module import

        self.cfg = cfg
        self.worker_index = worker_index
        self.backend = VLLMBackend(model_path, cfg)
        self.tokenizer = self.backend.tokenizer
        self.store = AdapterStore(node_local_dir(worker_index), keep=cfg.keep_versions)
        self.version = 0
        self.checksum = "base"
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"tools-w{worker_index}")

    # -- adapters --------------------------------------------------------------------------------------------
    def load_adapter(self, version: int, files: Mapping[str, bytes]) -> dict:
        """Load ``version`` (idempotent for the same bytes), serve it from now on, drop idle old versions."""
        rank = adapter_rank(files)
        if rank > self.cfg.max_lora_rank:
            raise ValueError(f"adapter rank {rank} exceeds rollout.max_lora_rank={self.cfg.max_lora_rank}. "
                             f"Fix: set rollout.max_lora_rank to an allowed value >= {rank}")
        entry, is_new = self.store.put(version, files)
        if is_new:
            try:
                self.backend.add_adapter(entry)
            except Exception:
                self.store.drop(version)
                raise
        self.version, self.checksum = version, entry.checksum
        self._evict()
        return self.serving()

    def drop_idle_adapters(self) -> dict:
        """Serve the base model and unload every version no episode is using (a fresh start for a new run)."""
        self.use_version(0)
        self._evict(keep=0)
        return self.serving()

    def _evict(self, keep: int | None = None) -> None:
        """Unload idle versions beyond the newest ``keep`` (default ``rollout.keep_versions``) from engine and disk."""
        for old in self.store.evictable(current=self.version, keep=keep):
            self.backend.remove_adapter(old.version)
            self.store.drop(old.version)

    def serving(self) -> dict:
        """What this worker serves now: the verification the job checks after every sync."""
        return {"worker_index": self.worker_index, "version": self.version, "checksum": self.checksum,
                "resident": sorted(self.store.versions), "pid": os.getpid()}

    # -- episodes --------------------------------------------------------------------------------------------
    def use_version(self, version: int) -> dict:
        """Serve an already resident version (or 0, the base model) from now on."""
        if version != 0 and version not in self.store.versions:
            raise KeyError(f"adapter version {version} is not resident; resident: {sorted(self.store.versions)}")
        self.backend.activate(version, self.store.versions[version].path if version else None)
        self.version = version
        self.checksum = self.store.versions[version].checksum if version else "base"
        return self.serving()

    def run_episodes(self, tasks: Sequence[Task], *, samples_per_task: int | None = None,
                     version: int | None = None, temperature: float | None = None) -> list[Trajectory]:
        """Play ``samples_per_task`` episodes of every task with one adapter version, batched in one engine.

        ``temperature=0`` is greedy (evaluation); training keeps the configured temperature.
        """
        version = self.version if version is None else version
        n = samples_per_task or self.cfg.samples_per_task
        cfg = self.cfg if temperature is None else replace(self.cfg, temperature=temperature)
        specs = [EpisodeSpec(task, sample_index=i, group_id=task.task_id) for task in tasks for i in range(n)]
        self.store.acquire(version)
        try:
            return run_episodes(self.backend, self.tokenizer, specs, cfg, version=version, pool=self.pool)
        finally:
            self.store.release(version)

    def judge(self, prompts: Sequence[str], max_tokens: int, temperature: float = 0.0) -> list[str]:
        """The LLM judge on this engine (``reward.judge=rollout``): one reply per prompt, each prompt a user message,
        from the base model (no LoRARequest; the served adapter version is unchanged). Needs LoRA serving: with
        merged serving the base is not in the weights (RuntimeError naming the fix)."""
        return self.backend.generate_chat([[{"role": "user", "content": p}] for p in prompts], max_tokens=max_tokens,
                                          temperature=temperature)

    def prompt_logprobs(self, token_ids: Sequence[int], version: int | None = None) -> list[float]:
        """Per-token logprobs of a fixed sequence under a version: the probe that verifies a sync."""
        return self.backend.prompt_logprobs(list(token_ids), self.version if version is None else version)

    def ping(self) -> int:
        return os.getpid()

    def process_tree(self) -> dict:
        """This actor's process and its engine's child processes: what the pool reaps if this worker dies."""
        from actors.worker_recovery import process_tree

        return process_tree()
