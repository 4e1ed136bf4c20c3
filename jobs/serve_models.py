"""What a serve replica loads: the base model directory and the adapter, each with the model id clients ask for.

An adapter is served on the base it was trained on, found the way the eval job finds it (``jobs.eval_policies``):
an RL run's adapter sits on top of the base with its SFT warm start merged in, and on the bare base it would be a
different, broken policy. The base model id is then not ``model.name`` but the merged base's directory name, so a
client never mistakes that base for the bare one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from actors.config import VLLM_LORA_RANKS

__all__ = ["ServedModels", "adapter_problems", "adapter_name", "resolve_served", "lora_rank_for"]


@dataclass(frozen=True)
class ServedModels:
    base_path: str  # the model directory the engine loads
    base_name: str  # its model id in requests and /v1/models
    adapter_path: str | None  # PEFT adapter directory served as LoRA; None = base only
    adapter_name: str | None
    adapter_rank: int = 0

    def names(self) -> list[str]:
        return [self.base_name] + ([self.adapter_name] if self.adapter_name else [])


def lora_rank_for(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of ``rank``.

    >>> lora_rank_for(16), lora_rank_for(12), lora_rank_for(1)
    (16, 16, 1)
    """
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def adapter_problems(spec: str) -> list[str]:
    """Cheap checks (no training, no merging) of an adapter spec, for config validation before anything starts."""
    from jobs.eval_policies import PolicyError, locate_adapter
    from jobs.warm_start import check_init_adapter, recipe_path

    if recipe_path(spec) is not None:
        return [p.replace("init_adapter: ", "adapter: ", 1) for p in check_init_adapter(spec)]
    try:
        adapter, _ = locate_adapter(spec)
    except PolicyError as err:
        return [f"adapter: {err}"]
    try:
        rank = int(json.loads((adapter / "adapter_config.json").read_text())["r"])
    except (ValueError, KeyError, TypeError) as err:
        return [f"adapter: {adapter}/adapter_config.json has no readable rank `r` ({err!r}). Fix: point at a PEFT "
                "LoRA adapter saved by `PeftModel.save_pretrained`"]
    if rank > VLLM_LORA_RANKS[-1]:
        return [f"adapter: rank {rank} exceeds the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]}). Fix: train "
                "a lower-rank adapter, or merge it into the base and serve that as model.name"]
    return []


def adapter_name(spec: str) -> str:
    """The model id an adapter is asked for by when the config names none: ``sft`` for the SFT recipe, the run's
    name for a run, run name + step for a checkpoint, else the adapter directory's name."""
    from jobs.eval_policies import locate_adapter
    from jobs.warm_start import recipe_path

    if recipe_path(spec) is not None:
        return "sft"
    adapter, run_dir = locate_adapter(spec)
    if run_dir is None:
        return adapter.name
    if adapter.parent.name.startswith("step_") and Path(spec).expanduser().resolve() != run_dir:
        return f"{run_dir.name}-{adapter.parent.name}"  # a checkpoint named explicitly, not the run's latest
    return run_dir.name


def resolve_served(cfg, *, log=print) -> ServedModels:
    """Resolve ``cfg.model`` and ``cfg.adapter`` to directories (may train the cached SFT adapter or build a merged
    base once; both are cached)."""
    from cluster.model import resolve_model
    from jobs.eval_config import EvalOptions
    from jobs.eval_policies import resolve_policies

    bare = str(Path(resolve_model(cfg.model.name)).resolve())
    if not cfg.adapter:
        return ServedModels(bare, cfg.api.base_name or cfg.model.name, None, None)
    name = cfg.adapter_name or adapter_name(cfg.adapter)
    (policy,) = resolve_policies(EvalOptions(adapters=[f"{_safe(name)}={cfg.adapter}"], base=False), cfg.model.name,
                                 max_lora_rank=VLLM_LORA_RANKS[-1], log=log)
    base_name = cfg.api.base_name or (cfg.model.name if policy.base_model == bare else Path(policy.base_model).name)
    if name == base_name:
        name = f"{name}-adapter"
    rank = int(json.loads((Path(policy.adapter) / "adapter_config.json").read_text())["r"])
    return ServedModels(policy.base_model, base_name, policy.adapter, name, rank)


def _safe(name: str) -> str:
    """eval's policy names are stricter than model ids (no dots or colons); the name there is only a label."""
    label = "".join(c if c.isalnum() or c in "_-" else "-" for c in name).lstrip("_-") or "adapter"
    return "adapter" if label == "base" else label
