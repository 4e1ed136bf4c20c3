"""Rollout configuration: the vLLM engine each rollout worker owns and how episodes are played."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config_loader import doc

# vLLM only accepts these LoRA ranks for max_lora_rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Sync-verification tolerances by engine dtype, per token, vs an fp32 learner: (absolute, change). Measured in
# docs/design.md: an fp32 engine agrees to ~1e-5; bf16 LoRA serving is off by ~0.05 per adapter.
ENGINE_DTYPES = {"float32": (0.002, 0.002), "bfloat16": (0.08, 0.08), "float16": (0.08, 0.08)}


@dataclass(frozen=True)
class RolloutConfig:
    num_workers: int = doc(1, "rollout worker actors, one vLLM engine each; 1 fits a 2-core machine")
    num_cpus_per_worker: float = doc(1.0, "Ray CPUs reserved per worker; fractional so small machines fit")
    num_gpus_per_worker: float = doc(0.0, "Ray GPUs per worker; 1 on GPU clusters, 0 on CPU")
    dtype: str = doc("float32", "engine dtype. fp32 on CPU: logprobs match the fp32 learner to 1e-5 and LoRA serving "
                                "costs ~15% vs bf16, whose LoRA path adds ~0.05/token noise (docs/design.md); "
                                "bfloat16 on GPUs")
    max_model_len: int = doc(2048, "tokens of context per episode the engine reserves room for")
    kv_cache_gib: float = doc(2.0, "VLLM_CPU_KVCACHE_SPACE on CPU, GiB; 2 GiB holds ~90k tokens of SmolLM2")
    gpu_memory_utilization: float = doc(0.5, "fraction of GPU memory vLLM may take on GPU machines")
    max_num_seqs: int = doc(64, "sequences the engine batches at once")
    enable_lora: bool = doc(True, "serve the trained policy as LoRA adapters (hot-swapped per version)")
    adapter_serving: str = doc("auto", "how the trained adapter is served: lora (vLLM LoRA, several versions at "
                                       "once), merged (merged into the engine's weights in place, one version at a "
                                       "time, ~3x faster on CPU), auto = merged on CPU, lora on GPU "
                                       "(actors/merged_weights.py)")
    max_lora_rank: int = doc(16, "largest adapter rank the engine accepts; must be one vLLM allows")
    max_loras: int = doc(2, "adapter versions one batch may mix; async training needs >= max_staleness + 1")
    keep_versions: int = doc(2, "adapter versions kept loaded; older ones are dropped once no episode uses them")
    enforce_eager: bool = doc(True, "skip CUDA-graph capture; faster start, fine for small models")
    temperature: float = doc(1.0, "sampling temperature; the learner uses the same one for its logprobs")
    top_p: float = doc(1.0, "nucleus sampling; keep 1.0 for training (PPO ratios assume the full distribution)")
    max_turns: int = doc(4, "assistant turns per episode before it is cut as truncated")
    max_tokens_per_turn: int = doc(128, "new tokens per assistant turn")
    max_total_tokens: int = doc(1024, "prompt + completion tokens per episode before it is cut as truncated")
    tool_timeout_s: float = doc(5.0, "seconds a tool call may take before it returns a timeout error")
    samples_per_task: int = doc(4, "episodes per task: the GRPO/RLOO group size")
    seed: int = doc(0, "base seed; each episode's requests get a seed derived from it, the task and sample index")
    max_workers: int = doc(0, "elastic pool: between steps, add a rollout worker whenever the cluster has room for one "
                               "(e.g. a node the autoscaler added), up to this many; 0 = fixed at num_workers. "
                               "<run dir>/rollout_workers (a number) resizes the pool by hand")
    max_worker_restarts: int = doc(3, "rollout workers the pool may replace over a run after one dies (its lost "
                                      "episodes are played again); 0 = a dead worker ends the run")

    def validate(self) -> list[str]:
        problems = []
        for name in ("num_workers", "max_model_len", "max_num_seqs", "max_turns", "max_tokens_per_turn",
                     "max_total_tokens", "max_loras", "keep_versions", "samples_per_task"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}. Fix: set a positive integer")
        if self.temperature <= 0:
            problems.append(f"temperature: must be > 0, got {self.temperature}. Fix: use e.g. 1.0 (greedy eval "
                            "uses its own setting)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p: must be in (0, 1], got {self.top_p}. Fix: use 1.0 for training")
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            problems.append(f"max_lora_rank: vLLM accepts {VLLM_LORA_RANKS}, got {self.max_lora_rank}. "
                            "Fix: pick the smallest allowed value >= the adapter rank")
        if self.max_total_tokens > self.max_model_len:
            problems.append(f"max_total_tokens: {self.max_total_tokens} exceeds max_model_len "
                            f"{self.max_model_len}. Fix: lower max_total_tokens or raise max_model_len")
        if self.dtype not in ENGINE_DTYPES:
            problems.append(f"dtype: {self.dtype!r} unsupported. Fix: use one of {sorted(ENGINE_DTYPES)}")
        if self.adapter_serving not in ("auto", "lora", "merged"):
            problems.append(f"adapter_serving: {self.adapter_serving!r} unknown. Fix: use auto, lora or merged")
        if self.kv_cache_gib <= 0:
            problems.append(f"kv_cache_gib: must be > 0, got {self.kv_cache_gib}. Fix: use e.g. 2.0")
        if self.num_cpus_per_worker < 0 or self.num_gpus_per_worker < 0:
            problems.append("num_cpus_per_worker/num_gpus_per_worker: must be >= 0. Fix: use 1.0 / 0.0 on CPU")
        if self.max_workers and self.max_workers < self.num_workers:
            problems.append(f"max_workers: {self.max_workers} < num_workers {self.num_workers}. Fix: set max_workers "
                            ">= num_workers, or 0 for a fixed pool")
        if self.max_worker_restarts < 0:
            problems.append(f"max_worker_restarts: must be >= 0, got {self.max_worker_restarts}. Fix: use e.g. 3")
        if self.tool_timeout_s <= 0:
            problems.append(f"tool_timeout_s: must be > 0, got {self.tool_timeout_s}. Fix: use e.g. 5.0")
        return problems
