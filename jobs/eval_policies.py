"""What the eval job plays: each policy as (base model directory, adapter directory or None).

An adapter is played on the base it was trained on. RL from a warm start trains its adapter on top of the base with
the SFT adapter merged in (DESIGN.md, "Reference policy"), so a trained run's adapter played on the bare base would
be a different, broken policy. The base of an adapter is, in order:

1. the ``base_model_name_or_path`` its ``adapter_config.json`` records, when that is a model directory here (true
   for every adapter this project wrote on this machine, merged bases included: they are cached by checksum);
2. for a training run or checkpoint directory: the run's own warm start, rebuilt from its ``config.yaml``
   (``train.init_adapter`` merged into ``model.name``; cached, so usually no work);
3. otherwise the eval config's ``model.name``.

Policies with the same base share one engine; a different base needs an engine of its own (played one after the
other, so only one is up at a time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.eval_config import BASE, EvalOptions, parse_adapter
from jobs.warm_start import check_init_adapter, recipe_path

__all__ = ["Policy", "PolicyError", "adapter_problems", "locate_adapter", "resolve_policies", "by_base"]


@dataclass(frozen=True)
class Policy:
    name: str
    base_model: str  # the model directory the engine loads
    adapter: str | None  # a PEFT adapter directory; None = the base model itself
    source: str  # what the user gave, for the report

    def describe(self) -> str:
        if self.adapter is None:
            return f"`{self.source}` (no adapter)"
        return f"`{self.source}` -> adapter `{self.adapter}` on `{self.base_model}`"


class PolicyError(ValueError):
    """An adapter spec that cannot be played; the message names it and the fix."""


def adapter_problems(spec: str) -> list[str]:
    """Cheap checks of one adapter spec (no training, no merging), for config validation."""
    if recipe_path(spec) is not None:
        return check_init_adapter(spec)
    try:
        locate_adapter(spec)
    except PolicyError as err:
        return [str(err)]
    return []


def locate_adapter(spec: str) -> tuple[Path, Path | None]:
    """(adapter directory, run directory or None) of an adapter, checkpoint or training-run directory."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise PolicyError(f"{spec} does not exist. Fix: give a PEFT adapter directory, a training run directory "
                          "(runs/<name>-<time>), one of its checkpoints/step_N, or sft")
    if (path / "adapter_config.json").is_file():
        run = path.parents[2] if path.name == "adapter" and (path.parent / "step.json").is_file() else None
        return path.resolve(), run.resolve() if run else None
    if (path / "adapter" / "adapter_config.json").is_file():  # a checkpoint: <run>/checkpoints/step_N
        return (path / "adapter").resolve(), path.parents[1].resolve()
    if (path / "checkpoints").is_dir():  # a training run: its latest checkpoint
        from jobs.checkpoints import latest_checkpoint

        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise PolicyError(f"{spec} is a training run without a finished checkpoint. Fix: wait for its first "
                              "checkpoint (train.checkpoint_every), or point at an adapter directory")
        return (checkpoint / "adapter").resolve(), path.resolve()
    raise PolicyError(f"{spec} holds no adapter (no adapter_config.json, no adapter/, no checkpoints/). Fix: point "
                      "at the directory `python -m jobs.sft` printed, a run directory, or a checkpoint in it")


def resolve_policies(opts: EvalOptions, model_name: str, *, max_lora_rank: int, log: Callable = print
                     ) -> list[Policy]:
    """Every policy of the config with its base and adapter; may train the cached SFT adapter or build a merged
    base once (both cached). PolicyError for an adapter that cannot be played here."""
    from cluster.model import resolve_model
    from jobs.warm_start import warm_start_adapter

    base_path = str(Path(resolve_model(model_name)).resolve())
    policies = [Policy(BASE, base_path, None, model_name)] if opts.base else []
    for item in opts.adapters:
        name, spec = parse_adapter(item)
        if recipe_path(spec) is not None:
            adapter, base = Path(warm_start_adapter(spec, model_name, log=log)), base_path
        else:
            adapter, run_dir = locate_adapter(spec)
            base = _trained_base(adapter, run_dir, base_path, log)
        rank = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 0))
        if rank > max_lora_rank:
            raise PolicyError(f"adapter {name} ({adapter}) has rank {rank} > rollout.max_lora_rank {max_lora_rank}. "
                              f"Fix: set rollout.max_lora_rank to an allowed value >= {rank}")
        policies.append(Policy(name, base, str(adapter), spec))
        log(f"policy {name}: adapter {adapter} on {base}")
    return policies


def by_base(policies: Sequence[Policy]) -> dict[str, list[Policy]]:
    """Policies grouped by the base model their engine loads, in order of first appearance.

    >>> groups = by_base([Policy("base", "/m", None, "m"), Policy("a", "/m2", "/a", "a"), Policy("b", "/m", "/b", "b")])
    >>> {base: [p.name for p in group] for base, group in groups.items()}
    {'/m': ['base', 'b'], '/m2': ['a']}
    """
    groups: dict[str, list[Policy]] = {}
    for policy in policies:
        groups.setdefault(policy.base_model, []).append(policy)
    return groups


def _trained_base(adapter: Path, run_dir: Path | None, default: str, log: Callable) -> str:
    recorded = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if recorded and (Path(recorded) / "config.json").is_file():
        return str(Path(recorded).resolve())
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        from jobs.config import RunConfig
        from jobs.config_loader import ConfigError, load_config
        from jobs.warm_start import warm_started_model

        try:
            run = load_config(RunConfig, run_dir / "config.yaml")
        except ConfigError as err:
            raise PolicyError(f"{adapter}: its base is not recorded here and its run's config cannot be read "
                              f"({err}). Fix: repair that config.yaml, or copy the adapter directory out of the "
                              "run to play it on model.name") from err
        log(f"{adapter}: rebuilding its run's warm start ({run.train.init_adapter} on {run.model.name})")
        return str(Path(warm_started_model(run.train.init_adapter, run.model.name)).resolve())
    return default
