"""The policy: token logprobs against a naive computation, temperature, LoRA init, adapter on/off, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jobs.config_loader import ConfigError, from_dict, undocumented
from learners.policy import (
    LLAMA_LINEAR_MODULES,
    LoraSettings,
    add_lora,
    load_adapter,
    load_base,
    save_adapter,
    token_logprobs,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def base(model_path):
    return load_base(model_path)  # never wrapped: LoRA tests load their own copy (PEFT injects in place)


@pytest.fixture(scope="module")
def batch():
    """Two rows of 12 tokens; the second is left-padded by 3."""
    ids = torch.randint(100, 49000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def naive(model, ids, mask, temperature=1.0):
    """Full logits from the model's own forward, log-softmax, gather: what token_logprobs must equal."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()[:, :-1] / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def real(mask):
    """Positions whose prediction and target are both real tokens."""
    return mask[:, :-1].bool() & mask[:, 1:].bool()


def test_matches_the_naive_log_softmax_gather(base, batch):
    ids, mask = batch
    with torch.no_grad():
        got, entropy = token_logprobs(base, ids, mask, return_entropy=True)
        expected, expected_entropy = naive(base, ids, mask)
        unpadded = token_logprobs(base, ids[1:, 3:], mask[1:, 3:])
    keep = real(mask)
    assert got.shape == (2, 11) and got.dtype == torch.float32
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy[keep], expected_entropy[keep], atol=1e-3, rtol=1e-4)
    assert (got[keep] < 0).all()
    # Left padding changes nothing: positions come from the mask.
    torch.testing.assert_close(got[1, 3:], unpadded[0], atol=1e-4, rtol=1e-4)


def test_where_and_chunks_give_the_same_values(base, batch):
    ids, mask = batch
    where = torch.zeros(2, 11, dtype=torch.bool)
    where[0, 2:5] = where[1, 7:] = True
    with torch.no_grad():
        full = token_logprobs(base, ids, mask)
        some = token_logprobs(base, ids, mask, where=where, chunk_rows=2)
    torch.testing.assert_close(some[where], full[where])
    assert (some[~where] == 0).all()
    with pytest.raises(ValueError, match="where must be"):
        token_logprobs(base, ids, mask, where=where[:, :5])


def test_temperature_divides_the_logits(base, batch):
    ids, mask = batch
    keep = real(mask)
    with torch.no_grad():
        hot = token_logprobs(base, ids, mask, temperature=2.0)
        cold = token_logprobs(base, ids, mask, temperature=0.5)
        plain = token_logprobs(base, ids, mask)
        expected, _ = naive(base, ids, mask, temperature=2.0)
    torch.testing.assert_close(hot[keep], expected[keep], atol=1e-4, rtol=1e-4)
    # Random tokens are unlikely: a flatter distribution gives them more mass, a sharper one less.
    assert (hot[keep] > plain[keep]).float().mean() > 0.8 and (cold[keep] < plain[keep]).float().mean() > 0.8
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(base, ids, mask, temperature=0.0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fresh_lora_equals_base_and_disable_adapter_gives_base(model_path, batch, dtype):
    ids, mask = batch
    keep = real(mask)
    torch.manual_seed(0)
    model = load_base(model_path, dtype)
    with torch.no_grad():
        reference = token_logprobs(model, ids, mask)
        model = add_lora(model, LoraSettings(rank=8, alpha=16))  # zero B: starts as the base
        fresh = token_logprobs(model, ids, mask)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        moved = token_logprobs(model, ids, mask)
        with model.disable_adapter():
            off = token_logprobs(model, ids, mask)
    torch.testing.assert_close(fresh[keep], reference[keep], atol=1e-5, rtol=0)
    assert (moved[keep] - reference[keep]).abs().max() > 0.1
    torch.testing.assert_close(off[keep], reference[keep], atol=1e-5, rtol=0)


def test_lora_targets_every_linear_layer_and_gets_gradients(model_path, batch):
    ids, mask = batch
    torch.manual_seed(0)
    model = add_lora(load_base(model_path), LoraSettings())
    layers = model.get_base_model().config.num_hidden_layers
    adapted = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == set(LLAMA_LINEAR_MODULES)
    assert sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A")) == 7 * layers
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    where = torch.zeros(2, 11, dtype=torch.bool)
    where[:, -4:] = True
    (-token_logprobs(model, ids, mask, where=where, chunk_rows=3).sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n or "lora_B" in n)


def test_save_and_load_adapter_round_trip(model_path, batch, tmp_path):
    ids, mask = batch
    torch.manual_seed(0)
    model = add_lora(load_base(model_path), LoraSettings(rank=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        trained = token_logprobs(model, ids, mask)
    out = save_adapter(model, tmp_path / "adapter")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    loaded = load_adapter(load_base(model_path), out)
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(loaded, ids, mask), trained)
    assert any(p.requires_grad for p in load_adapter(load_base(model_path), out, trainable=True).parameters())
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(load_base(model_path), tmp_path)


def test_lora_settings_are_documented_and_validated():
    assert not undocumented(LoraSettings)
    assert dataclasses.is_dataclass(LoraSettings) and LoraSettings().target_modules == LLAMA_LINEAR_MODULES
    with pytest.raises(ConfigError) as info:
        from_dict(LoraSettings, {"rank": 0, "alpha": -1, "dropout": 1.0, "target_modules": []})
    assert len(info.value.problems) == 4
    assert from_dict(LoraSettings, {"target_modules": ["q_proj", "v_proj"]}).target_modules == ("q_proj", "v_proj")


def test_shared_prefix_path_gives_the_plain_forwards_values_and_gradients(model_path):
    """Rows with a common 40-token prompt and right-padded continuations of unequal length: the prefix runs once."""
    from learners import policy

    torch.manual_seed(0)
    model = add_lora(load_base(model_path), LoraSettings(rank=4))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)  # a non-zero adapter, so the prefix's hidden states depend on it
    prompt = torch.randint(100, 49000, (40,), generator=torch.Generator().manual_seed(1))
    rest = torch.randint(100, 49000, (3, 9), generator=torch.Generator().manual_seed(2))
    ids = torch.cat([prompt.expand(3, -1), rest], dim=1)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    mask[2, -7:] = 0
    assert policy.shared_prefix_len(ids, mask) == 40
    where = torch.zeros(3, ids.shape[1] - 1, dtype=torch.bool)
    where[:, 39:] = real(mask)[:, 39:]

    def run(min_shared):
        model.zero_grad()
        original, policy.SHARED_PREFIX_MIN = policy.SHARED_PREFIX_MIN, min_shared
        try:
            lp = token_logprobs(model, ids, mask, where=where)
        finally:
            policy.SHARED_PREFIX_MIN = original
        lp.sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    shared_lp, shared_grads = run(min_shared=8)
    plain_lp, plain_grads = run(min_shared=10_000)
    torch.testing.assert_close(shared_lp, plain_lp, atol=1e-4, rtol=0)
    for name, grad in plain_grads.items():
        scale = grad.abs().max().item()
        assert (shared_grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-7, name
