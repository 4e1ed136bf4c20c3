"""The learner update: reference = adapter off, one model in memory, and data-parallel equivalence on gloo."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from learners.collate import collate
from learners.config import LearnerConfig
from learners.learner import Learner
from learners.policy import load_base, token_logprobs
from tests.learners.trajectories import scored_batch

pytestmark = pytest.mark.timeout(600)
CFG = LearnerConfig(lr=1e-3, warmup_steps=1, micro_batch_size=2, kl_coef=0.05)
# With eps >> |grad| Adam's first step is ~ lr * grad / eps: linear in the gradient, so equal updates mean equal
# summed gradients (with eps = 1e-8 it is ~ lr * sign(grad), which amplifies float summation-order noise).
LINEAR_CFG = LearnerConfig(lr=1.0, warmup_steps=1, micro_batch_size=2, kl_coef=0.05, adam_eps=1.0)


def test_collate_places_behavior_logprobs_on_sampled_tokens(tokenizer):
    trajs = scored_batch(tokenizer)
    batch = collate(trajs, tokenizer.pad_token_id)
    for i, t in enumerate(trajs):
        assert batch.loss_mask[i].sum().item() == t.num_sampled
        sampled = batch.input_ids[i, 1:][batch.loss_mask[i] > 0].tolist()
        assert sampled == [tok for tok, m in zip(t.completion_ids, t.loss_mask) if m]


def test_reference_is_the_base_with_adapter_off(model_path, tokenizer):
    trajs = scored_batch(tokenizer)
    learner = Learner(CFG, model_path, temperature=1.0)
    metrics = learner.update(trajs)
    assert metrics["skipped_update"] == 0 and metrics["grad_norm"] > 0
    batch = collate(trajs[:2], tokenizer.pad_token_id)
    with torch.no_grad():
        policy = token_logprobs(learner.model, batch.input_ids, batch.attention_mask)
        with learner.model.disable_adapter():
            ref = token_logprobs(learner.model, batch.input_ids, batch.attention_mask)
        base = token_logprobs(load_base(model_path), batch.input_ids, batch.attention_mask)  # a test-only copy
    mask = batch.attention_mask[:, 1:] > 0
    assert torch.allclose(ref[mask], base[mask], atol=1e-5)
    assert (policy[mask] - base[mask]).abs().max() > 1e-3
    # one model in memory: base weights + the LoRA matrices, nothing else
    n_params = sum(p.numel() for p in learner.model.parameters())
    n_base = sum(p.numel() for p in load_base(model_path).parameters())
    n_lora = sum(p.numel() for p in learner.params)
    assert n_params == n_base + n_lora and n_lora < 0.05 * n_base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_update(rank, world, port, model_path, trajs, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        learner = Learner(LINEAR_CFG, model_path, temperature=1.0, rank=rank, world_size=world)
        learner.update(trajs)
        if rank == 0:
            # numpy pickles by value; torch tensors would be shared through fds that die with this process
            out.put({k: v.numpy().copy() for k, v in learner.model.state_dict().items() if "lora_" in k})
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_equal_one_on_the_full_batch(model_path, tokenizer):
    trajs = scored_batch(tokenizer)
    shard_tokens = [sum(t.num_sampled for t in trajs[r::2]) for r in range(2)]
    assert shard_tokens[0] != shard_tokens[1]  # unequal shards: a per-rank mean could not pass by accident
    single = Learner(LINEAR_CFG, model_path, temperature=1.0)
    single.update(trajs)
    expected = {k: v for k, v in single.model.state_dict().items() if "lora_" in k}

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_update, args=(r, 2, port, model_path, trajs, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = out.get(timeout=500)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # PEFT starts every lora_B at zero: non-zero B means the update moved the adapter
    assert max(v.abs().max().item() for k, v in expected.items() if "lora_B" in k) > 1e-5
    for k, v in expected.items():
        torch.testing.assert_close(torch.from_numpy(got[k]), v, atol=1e-7, rtol=1e-3, msg=k)
