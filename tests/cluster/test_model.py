from __future__ import annotations

import pytest

from cluster.model import ModelNotFoundError, resolve_model


def test_shipped_model_resolves_offline_to_safetensors(model_path):
    path = resolve_model("smollm2-135m")
    assert str(path) == model_path
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert resolve_model(str(path)) == path  # a local directory is taken as is


def test_missing_path_and_unknown_id_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache.*smollm2-135m"):
        resolve_model("some-org/some-model-that-is-not-cached")
