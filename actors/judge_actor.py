"""The LLM judge on its own vLLM engine (``reward.judge=actor``): any HF model, no adapters, for clusters.

On a small machine the rollout engine's base model judges instead (``reward.judge=rollout``, no second engine).
A plain class (unit-testable without Ray); ``actors.remote.start_judge_actor`` makes it a Ray actor. It answers the
same call as ``RolloutWorker.judge``, so the reward actor does not care which one it holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from actors.config import RolloutConfig

__all__ = ["JudgeActor"]


class JudgeActor:
    def __init__(self, model_path: str, cfg: RolloutConfig):
        """``model_path``: a directory vLLM loads (``cluster.model.resolve_model`` of ``reward.judge_model``);
        ``cfg``: the run's rollout config, for the engine's dtype, context, memory and GPU share."""
        from actors.vllm_engine import VLLMBackend  # vLLM imports take seconds; keep them off module import

        # LoRA serving with LoRA off: a plain engine whose weights are the judge model's own, never merged into.
        self.backend = VLLMBackend(model_path, replace(cfg, enable_lora=False, adapter_serving="lora"))
        self.model_path = model_path

    def judge(self, prompts: Sequence[str], max_tokens: int, temperature: float = 0.0) -> list[str]:
        """One reply per prompt, each prompt a user message in the judge model's chat template."""
        return self.backend.generate_chat([[{"role": "user", "content": p}] for p in prompts], max_tokens=max_tokens,
                                          temperature=temperature)

    def ping(self) -> int:
        return os.getpid()
