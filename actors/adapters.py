"""Adapter versions on a rollout worker: bytes in, a node-local PEFT directory out, with a checksum.

Adapters travel between actors as ``{filename: bytes}`` through the Ray object store (nothing assumes a shared
disk); each worker writes them under its own directory (``/dev/shm`` when there is one) before vLLM loads them.
vLLM caches LoRA state and prefix-cache blocks by adapter name and int id, so every version gets a fresh,
unique pair. Versions in use by an episode are never dropped; beyond ``keep`` idle ones, the oldest go.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")


def checksum(files: Mapping[str, bytes]) -> str:
    """sha256 over the sorted file names and contents: the same adapter gives the same checksum on every node."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()[:16]


def read_adapter_dir(path: str | Path) -> dict[str, bytes]:
    """The files of a saved PEFT adapter (value heads and other extras are left out: vLLM cannot load them)."""
    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a PEFT adapter directory: missing {missing}. Fix: point at the "
                                "directory `PeftModel.save_pretrained` wrote (adapter_config.json + "
                                "adapter_model.safetensors)")
    return {f: (path / f).read_bytes() for f in REQUIRED_FILES}


def adapter_rank(files: Mapping[str, bytes]) -> int:
    return int(json.loads(files["adapter_config.json"])["r"])


@dataclass(frozen=True)
class AdapterVersion:
    version: int
    name: str  # unique per version and load, so vLLM never serves cached state of another version
    int_id: int
    path: str
    checksum: str


class AdapterStore:
    """Which versions are on disk and in the engine, and which episodes still use them."""

    _ids = itertools.count(1)  # vLLM int ids must be unique and > 0 for the engine's lifetime

    def __init__(self, root: str | Path, keep: int):
        self.root = Path(root)
        self.keep = keep
        self.versions: dict[int, AdapterVersion] = {}
        self.in_use: dict[int, int] = {}

    def put(self, version: int, files: Mapping[str, bytes]) -> tuple[AdapterVersion, bool]:
        """Write version to disk; returns (entry, is_new). The same version with the same bytes is a no-op."""
        digest = checksum(files)
        known = self.versions.get(version)
        if known is not None:
            if known.checksum != digest:
                raise ValueError(f"adapter version {version} already loaded with checksum {known.checksum}, "
                                 f"got {digest}. Fix: give a changed adapter a new version number")
            return known, False
        missing = [f for f in REQUIRED_FILES if f not in files]
        if missing:
            raise ValueError(f"adapter version {version} is missing {missing}")
        int_id = next(self._ids)
        path = self.root / f"v{version}-{int_id}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for name, data in files.items():
            (path / Path(name).name).write_bytes(data)
        entry = AdapterVersion(version, f"agentrl-v{version}-{int_id}", int_id, str(path), digest)
        self.versions[version] = entry
        return entry, True

    def acquire(self, version: int) -> None:
        self.in_use[version] = self.in_use.get(version, 0) + 1

    def release(self, version: int) -> None:
        self.in_use[version] -= 1
        if self.in_use[version] <= 0:
            del self.in_use[version]

    def evictable(self, current: int, keep: int | None = None) -> list[AdapterVersion]:
        """Versions to drop: beyond the newest ``keep``, never ``current`` and never one an episode uses."""
        newest = sorted(self.versions, reverse=True)[: self.keep if keep is None else keep]
        return [v for k, v in sorted(self.versions.items())
                if k not in newest and k != current and k not in self.in_use]

    def drop(self, version: int) -> None:
        entry = self.versions.pop(version)
        shutil.rmtree(entry.path, ignore_errors=True)
