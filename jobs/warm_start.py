"""The warm start RL begins from: none, a user's adapter directory, or the shipped SFT recipe, trained once.

``train.init_adapter``:

- ``null``: RL starts from the base model (the untrained SmolLM2 almost never calls a tool; expect no signal);
- a directory: a PEFT adapter (e.g. what ``python -m jobs.sft`` printed);
- ``sft`` or ``sft:<config.yaml>``: the SFT recipe (default ``configs/sft.yaml``) for this model. Its adapter is
  trained on first use and cached under ``$AGENTRL_CACHE/sft/<hash of the recipe and its demos>``, so
  ``python -m jobs.train`` is SFT -> RL in one command and later runs (and the tests) reuse the same adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = ROOT / "configs" / "sft.yaml"


def recipe_path(spec: str) -> Path | None:
    """The SFT recipe of an ``sft[:path]`` spec, or None when the spec is an adapter directory. A relative path is
    read from the working directory, else from the project root: Ray Train runs the learner in a directory of its
    own, where ``configs/...`` is not."""
    if spec == "sft":
        return DEFAULT_RECIPE
    if spec.startswith("sft:"):
        path = Path(spec[4:]).expanduser()
        return path if path.is_absolute() or path.exists() else ROOT / path
    return None


def check_init_adapter(spec: str | None) -> list[str]:
    if not spec:
        return []
    recipe = recipe_path(spec)
    if recipe is not None:
        return [] if recipe.is_file() else [f"init_adapter: SFT recipe {recipe} not found. Fix: give an SFT config "
                                            "file (see configs/sft.yaml) as sft:<path>, or plain sft"]
    if not (Path(spec).expanduser() / "adapter_config.json").is_file():
        return [f"init_adapter: {spec} is not a PEFT adapter directory (no adapter_config.json). Fix: run "
                "`python -m jobs.sft` and pass the adapter directory it prints, use `sft` to train the shipped "
                "recipe once, or null"]
    return []


def warm_start_adapter(spec: str | None, model: str, *, log=print) -> str | None:
    """The adapter directory to merge into the base before RL (None = start from the base)."""
    if not spec:
        return None
    recipe = recipe_path(spec)
    if recipe is None:
        return str(Path(spec).expanduser().resolve())
    return str(sft_recipe_adapter(recipe, model, log=log))


def warm_started_model(spec: str | None, model: str) -> str:
    """The model directory RL starts from: the base, or the base with the warm-start adapter merged in (the SFT
    policy, which is then also the KL reference). Built in a child process, so the job's driver does not keep the
    SFT run's or the merge's memory (several GB on CPU) for the rest of the run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        path = pool.submit(_warm_started_model, spec, model).result()
    print(f"policy base: {path}", flush=True)
    return path


def _warm_started_model(spec: str | None, model: str) -> str:
    from cluster.model import merged_model, resolve_model

    base = resolve_model(model)
    adapter = warm_start_adapter(spec, model, log=lambda line: print(line, flush=True))
    return str(merged_model(base, adapter) if adapter else base)


def demos_digest(cfg) -> str:
    """A hash of the conversations the recipe trains on (``learners.sft.recipe_demos``: its demo file's, or the
    scripted expert's). Part of the cache key, so a changed env prompt, tool schema, expert or demo file retrains
    the warm start instead of reusing an adapter trained on other text (128 support-desk demos build in under a
    second)."""
    from learners.sft import recipe_demos

    return hashlib.sha256(json.dumps(recipe_demos(cfg), sort_keys=True, default=str).encode()).hexdigest()


def recipe_cache_dir(recipe: Path, cfg) -> Path:
    """Where the warm start trained from ``cfg`` (the recipe at ``recipe``, with the model it is trained for) is
    cached: a hash of the config (its greedy check and output directory aside) and of its demonstrations."""
    from dataclasses import replace

    from cluster.model import cache_root
    from jobs.config_loader import to_dict

    cfg = replace(cfg, check_tasks=0, out_dir=None)
    key = hashlib.sha256((json.dumps(to_dict(cfg), sort_keys=True) + demos_digest(cfg)).encode()).hexdigest()[:12]
    return cache_root() / "sft" / f"{Path(recipe).stem}-{key}"


def _install(target: Path, adapter: Path, metrics: dict, source: str) -> None:
    """Copy a trained adapter into the cache entry ``target`` (a temp directory, then renamed: atomic); ``DONE``
    names where it came from."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    if tmp.resolve() != adapter.resolve():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(adapter, tmp)
    (tmp / "sft_metrics.json").write_text(json.dumps({k: v for k, v in metrics.items()
                                                      if k not in ("steps", "check", "adapter")}))
    (tmp / "DONE").write_text(source)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def sft_recipe_adapter(recipe: Path, model: str, *, log=print) -> Path:
    """Train the recipe's adapter once per (recipe, model, demonstrations) and cache it; concurrent callers train
    it once."""
    from dataclasses import replace

    from cluster.model import build_once, resolve_model
    from jobs.config_loader import load_config
    from learners.sft import SFTConfig, train_sft

    cfg = replace(load_config(SFTConfig, recipe), model=model, check_tasks=0, out_dir=None)
    target = recipe_cache_dir(recipe, cfg)

    def build() -> None:
        log(f"warm start: training the SFT recipe {recipe} once (cached at {target})")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        metrics = train_sft(cfg, resolve_model(model), tmp, log=lambda line: log(f"  sft {line}"))
        _install(target, tmp, metrics, str(recipe))

    return build_once(target, build)


def publish_warm_start(recipe: Path, cfg, adapter: Path, metrics: dict) -> Path | None:
    """``python -m jobs.sft --config R`` trained exactly recipe R's warm start: put its adapter in the cache, so a
    train job with ``init_adapter: sft:R`` uses it instead of training the same adapter again. Returns the cache
    entry, or None when overrides changed what the recipe trains (then the adapter is the run's alone). An entry
    already there is kept: the recipe's warm start is trained once."""
    from dataclasses import replace

    from cluster.model import build_once
    from jobs.config_loader import load_config
    from learners.sft import SFTConfig

    target = recipe_cache_dir(recipe, cfg)
    if target != recipe_cache_dir(recipe, replace(load_config(SFTConfig, recipe), model=cfg.model)):
        return None
    return build_once(target, lambda: _install(target, Path(adapter), metrics, f"{recipe} (jobs.sft: {adapter})"))
