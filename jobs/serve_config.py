"""The serve job's config: the model and adapter served, the engine inside each replica, the replicas' resources and
autoscaling, and the OpenAI-compatible API's limits.

Kept apart from ``RunConfig`` (jobs/config.py): serving trains nothing and its engine needs none of the episode
limits of ``RolloutConfig``. Loaded like every config here (``jobs.config_loader``: YAML + ``key.sub=value``
overrides, every problem reported at once with its fix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.config import ENGINE_DTYPES
from cluster.config import ModelConfig, RayConfig
from jobs.config_loader import doc

__all__ = ["ServeConfig", "EngineSection", "DeploymentSection", "HTTPSection", "APISection"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")  # model ids clients type; no spaces or quotes


@dataclass(frozen=True)
class EngineSection:
    dtype: str = doc("float32", "engine dtype; fp32 on CPU (the dtype rollout and eval run, so served tokens match "
                                "them; bf16 LoRA on CPU is noisier), bfloat16 on GPUs")
    max_model_len: int = doc(2048, "tokens of context per request (prompt + completion)")
    kv_cache_gib: float = doc(1.0, "VLLM_CPU_KVCACHE_SPACE on CPU, GiB per replica; 1 GiB holds ~45k tokens of "
                                   "SmolLM2 fp32")
    gpu_memory_utilization: float = doc(0.85, "fraction of the GPU a replica's engine may take (GPU machines)")
    max_num_seqs: int = doc(16, "requests one replica's engine batches at once")
    enforce_eager: bool = doc(True, "skip CUDA-graph capture: faster start; set false on GPUs for throughput")
    seed: int = doc(0, "engine seed; requests with a `seed` are reproducible")

    def validate(self) -> list[str]:
        problems = []
        if self.dtype not in ENGINE_DTYPES:
            problems.append(f"dtype: {self.dtype!r} unsupported. Fix: use one of {sorted(ENGINE_DTYPES)}")
        for name in ("max_model_len", "max_num_seqs"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be >= 1, got {getattr(self, name)}. Fix: set a positive integer")
        if self.kv_cache_gib <= 0:
            problems.append(f"kv_cache_gib: must be > 0, got {self.kv_cache_gib}. Fix: use e.g. 1.0")
        if not 0 < self.gpu_memory_utilization <= 1:
            problems.append(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}. "
                            "Fix: use e.g. 0.85")
        return problems


@dataclass(frozen=True)
class DeploymentSection:
    name: str = doc("agentrl-chat", "Ray Serve deployment name (replica logs and `serve status` show it)")
    num_cpus: float = doc(1.0, "Ray CPUs per replica; fractional to share a small machine")
    num_gpus: float = doc(0.0, "Ray GPUs per replica: 1 on GPU nodes (one engine per GPU), 0 on CPU")
    min_replicas: int = doc(1, "autoscaling floor; 1 keeps one engine warm (a cold start takes ~40 s on CPU)")
    max_replicas: int = doc(2, "autoscaling ceiling; each replica is one engine (memory: model + kv_cache_gib)")
    target_ongoing_requests: float = doc(4.0, "in-flight requests per replica the autoscaler aims for; above it "
                                              "Serve adds replicas")
    max_ongoing_requests: int = doc(16, "requests a replica accepts at once before Serve queues them at the proxy; "
                                        "keep >= engine.max_num_seqs so the engine can batch")
    upscale_delay_s: float = doc(30.0, "seconds of load above target before a replica is added")
    downscale_delay_s: float = doc(600.0, "seconds below target before a replica is removed (engines are slow to "
                                          "start again)")

    def validate(self) -> list[str]:
        problems = []
        if self.min_replicas < 0 or self.max_replicas < 1:
            problems.append(f"min_replicas/max_replicas: need min >= 0 and max >= 1, got {self.min_replicas}/"
                            f"{self.max_replicas}. Fix: e.g. 1 and 2")
        elif self.min_replicas > self.max_replicas:
            problems.append(f"min_replicas: {self.min_replicas} > max_replicas {self.max_replicas}. Fix: raise "
                            "max_replicas or lower min_replicas")
        if self.target_ongoing_requests <= 0:
            problems.append(f"target_ongoing_requests: must be > 0, got {self.target_ongoing_requests}. Fix: e.g. 4")
        if self.max_ongoing_requests < 1:
            problems.append(f"max_ongoing_requests: must be >= 1, got {self.max_ongoing_requests}. Fix: e.g. 16")
        if self.num_cpus < 0 or self.num_gpus < 0:
            problems.append("num_cpus/num_gpus: must be >= 0. Fix: 1.0 / 0.0 on CPU")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            problems.append("upscale_delay_s/downscale_delay_s: must be >= 0. Fix: e.g. 30 and 600")
        return problems

    def autoscaling(self) -> dict:
        """Ray Serve's ``autoscaling_config``."""
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": max(1, self.min_replicas), "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s}


@dataclass(frozen=True)
class HTTPSection:
    host: str = doc("127.0.0.1", "address the local Serve proxy listens on (CLI only; a RayService sets its own in "
                                 "serveConfigV2.http_options); 0.0.0.0 to accept other machines")
    port: int = doc(8000, "port of the local Serve proxy (CLI only)")
    route_prefix: str = doc("/", "URL prefix of the app; the API is under <prefix>v1/")

    def validate(self) -> list[str]:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port: {self.port} is not a TCP port. Fix: e.g. 8000")
        if not self.route_prefix.startswith("/"):
            problems.append(f"route_prefix: must start with '/', got {self.route_prefix!r}. Fix: e.g. /")
        return problems


@dataclass(frozen=True)
class APISection:
    base_name: str | None = doc(None, "the model id of the base model in requests and /v1/models; None = model.name "
                                      "(or the warm-started base's directory name when the adapter needs one)")
    default_system_prompt: str = doc("You are a helpful assistant.",
                                     "system prompt added when a request has tools but no system message: our chat "
                                     "template lists the tools inside the first system message")
    default_max_tokens: int = doc(256, "completion tokens when a request gives no max_tokens (capped by the room "
                                       "left in engine.max_model_len)")
    max_n: int = doc(4, "most choices (`n`) one request may ask for")

    def validate(self) -> list[str]:
        problems = []
        if self.base_name is not None and not _NAME.match(self.base_name):
            problems.append(f"base_name: {self.base_name!r} is not a model id. Fix: letters, digits and _.:/- only")
        if self.default_max_tokens < 1 or self.max_n < 1:
            problems.append("default_max_tokens/max_n: must be >= 1. Fix: e.g. 256 and 4")
        return problems


@dataclass(frozen=True)
class ServeConfig:
    model: ModelConfig = doc(ModelConfig(), "the base model every replica loads")
    adapter: str | None = doc(None, "the trained policy served beside the base: a PEFT adapter directory, a training "
                                    "run directory (its latest checkpoint) or one of its checkpoints/step_N, or sft "
                                    "(the cached SFT recipe adapter); null = the base model only. Must be on storage "
                                    "every replica's node can read")
    adapter_name: str | None = doc(None, "the model id that selects the adapter in requests; None = derived from the "
                                         "path (run name, run name + step, or the adapter directory's name)")
    ray: RayConfig = doc(RayConfig(), "which Ray cluster to use (CLI only)")
    engine: EngineSection = doc(EngineSection(), "the vLLM engine inside each replica")
    deployment: DeploymentSection = doc(DeploymentSection(), "replica resources and autoscaling")
    http: HTTPSection = doc(HTTPSection(), "where the local Serve proxy listens (CLI only)")
    api: APISection = doc(APISection(), "the OpenAI-compatible API's names and limits")

    def validate(self) -> list[str]:
        from jobs.serve_models import adapter_problems

        problems = adapter_problems(self.adapter) if self.adapter else []
        if self.adapter_name is not None and not _NAME.match(self.adapter_name):
            problems.append(f"adapter_name: {self.adapter_name!r} is not a model id. Fix: letters, digits and _.:/- "
                            "only")
        if self.adapter_name is not None and self.adapter_name == self.api.base_name:
            problems.append(f"adapter_name: {self.adapter_name!r} is also api.base_name. Fix: give them different "
                            "names")
        if self.deployment.max_ongoing_requests < self.engine.max_num_seqs:
            problems.append(f"deployment.max_ongoing_requests: {self.deployment.max_ongoing_requests} < "
                            f"engine.max_num_seqs {self.engine.max_num_seqs}: the engine could never fill its batch. "
                            "Fix: raise max_ongoing_requests or lower max_num_seqs")
        return problems
