"""The learner update: reference = adapter off, one model in memory, and data-parallel equivalence on gloo."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

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


def _trained_weights(learner: Learner) -> dict[str, torch.Tensor]:
    weights = {k: v for k, v in learner.model.state_dict().items() if "lora_" in k}
    if learner.value_head is not None:
        weights |= {f"value_head.{k}": v for k, v in learner.value_head.state_dict().items()}
    return weights


def _rank_update(rank, world, port, model_path, trajs, cfg, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        learner = Learner(cfg, model_path, temperature=1.0, rank=rank, world_size=world)
        learner.update(trajs)
        if rank == 0:
            # numpy pickles by value; torch tensors would be shared through fds that die with this process
            out.put({k: v.numpy().copy() for k, v in _trained_weights(learner).items()})
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_two_gloo_workers_equal_one_on_the_full_batch(model_path, tokenizer, algo):
    """PPO adds per-rank GAE and advantage whitening with moments summed over ranks, and the value head."""
    cfg = replace(LINEAR_CFG, algo=algo)
    trajs = scored_batch(tokenizer)
    shard_tokens = [sum(t.num_sampled for t in trajs[r::2]) for r in range(2)]
    assert shard_tokens[0] != shard_tokens[1]  # unequal shards: a per-rank mean could not pass by accident
    single = Learner(cfg, model_path, temperature=1.0)
    single.update(trajs)
    expected = _trained_weights(single)

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_update, args=(r, 2, port, model_path, trajs, cfg, out)) for r in range(2)]
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


# lam = 1: the value targets are the Monte-Carlo returns, which do not move with the critic (a fixed regression).
PPO_CFG = LearnerConfig(algo="ppo", lr=1e-3, warmup_steps=1, micro_batch_size=2, kl_coef=0.05, vf_coef=1.0, lam=1.0)


def test_ppo_fits_its_value_head_and_keeps_it_beside_the_adapter(model_path, tokenizer):
    trajs = scored_batch(tokenizer)
    learner = Learner(PPO_CFG, model_path, temperature=1.0)
    mse = [learner.update(trajs)["value_mse"] for _ in range(3)]
    assert min(mse[1:]) < 0.7 * mse[0], mse  # the critic learns the returns of a fixed batch
    state = learner.state()
    assert "value_head.safetensors" in state
    assert not any("value" in name for name in state["adapter"])  # the PEFT adapter stays a plain adapter


def test_resume_then_replaying_the_stored_batch_gives_the_uninterrupted_adapter(model_path, tokenizer, tmp_path):
    """Checkpoint after step 1, restore into a fresh learner, replay step 2's batch read back from Parquet: the
    adapter, value head, optimizer moments, step and RNG equal the uninterrupted run's."""
    from actors.trajectory import read_parquet, write_parquet
    from jobs.checkpoints import load_checkpoint, save_checkpoint

    first = scored_batch(tokenizer)
    second = scored_batch(tokenizer, rewards=(0.0, 1.0, 0.5, 1.0, 0.0, 0.0))
    write_parquet(second, tmp_path / "step_2.parquet")
    uninterrupted = Learner(PPO_CFG, model_path, temperature=1.0)
    uninterrupted.update(first)
    rng_at_save = torch.get_rng_state()
    checkpoint = save_checkpoint(tmp_path, 1, uninterrupted, {"position": 8})
    uninterrupted.update(second)

    resumed = Learner(replace(PPO_CFG, seed=5), model_path, temperature=1.0)  # a different init, overwritten
    torch.manual_seed(123)  # the restore must bring back the checkpoint's RNG, not keep this one
    assert load_checkpoint(checkpoint, resumed) == 1 and resumed.step == 1
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    resumed.update(read_parquet(tmp_path / "step_2.parquet"))
    assert resumed.step == uninterrupted.step == 2
    want, got = _trained_weights(uninterrupted), _trained_weights(resumed)
    assert max(v.abs().max().item() for k, v in want.items() if "lora_B" in k) > 1e-5
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5, msg=k)
    moments = [s["exp_avg_sq"] for s in resumed.optimizer.state_dict()["state"].values()]
    expected = [s["exp_avg_sq"] for s in uninterrupted.optimizer.state_dict()["state"].values()]
    for a, b in zip(moments, expected):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-5)


def _with_turn_rewards(trajs, per_turn=(0.3, -0.2, 0.1)):
    """Give turn k of every episode the reward per_turn[k] (+ a little per episode, so groups are not flat)."""
    return [replace(t, turns=[replace(turn, reward=per_turn[k % len(per_turn)] + 0.05 * i)
                              for k, turn in enumerate(t.turns)]) for i, t in enumerate(trajs)]


@pytest.mark.parametrize("mode", ["add", "turn"])
def test_process_advantages_on_a_shard_equal_the_full_batch_formula(tokenizer, mode):
    """GRPO + process supervision: normalised over the *full* batch's groups, then placed per micro-batch of this
    rank's shard; every sampled token of a shard row gets what the full-batch formula gives that row."""
    from learners.advantages import normalize_step_rewards, steps_to_go, turn_local
    from learners.collate import split

    trajs = _with_turn_rewards(scored_batch(tokenizer))
    full = collate(trajs, tokenizer.pad_token_id)
    norm = normalize_step_rewards([[t.reward for t in traj.turns] for traj in trajs], [t.group_id for t in trajs])
    place = {"add": steps_to_go, "turn": turn_local}[mode]
    want = place([[(end, r) for (end, _), r in zip(row, n)] for row, n in zip(full.turn_ends, norm)],
                 full.loss_mask)
    assert want.abs().max() > 0.1
    learner = Learner.__new__(Learner)  # _process_advantages needs only the config: no model loaded here
    learner.cfg = replace(CFG, process_reward_mode=mode)
    mine = [1, 3, 5]  # rank 1 of 2
    micro = split(collate([trajs[i] for i in mine], tokenizer.pad_token_id), 2)
    got = learner._process_advantages(trajs, mine, micro, learner.kept(trajs))
    rows = [(mb, a, r) for mb, a in zip(micro, got) for r in range(len(mb))]
    for i, (mb, adv, r) in zip(mine, rows, strict=True):
        torch.testing.assert_close(adv[r][mb.loss_mask[r] > 0], want[i][full.loss_mask[i] > 0])


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_uniform_outcome_groups_drop_zeroes_the_groups_whose_outcomes_are_all_equal(tokenizer, algo):
    """Group 0 has an outcome contrast. Group 1 failed twice, with totals that differ by shaping only: 'keep' gives
    it advantages, 'drop' gives it none, outcome or process. Group 2 has no breakdown: its totals are the outcome."""
    from learners.collate import split

    trajs = _with_turn_rewards(scored_batch(tokenizer, rewards=(1.1, -0.2, 0.1, -0.3, 0.5, 0.5)))
    outcomes = [1.0, 0.0, 0.0, 0.0, None, None]
    trajs = [replace(t, reward_breakdown=None if o is None else {"outcome": o, "total": t.reward})
             for t, o in zip(trajs, outcomes)]
    learner = Learner.__new__(Learner)  # advantages and _process_advantages need only the config
    mine = list(range(6))
    micro = split(collate(trajs, tokenizer.pad_token_id), 2)
    got = {}
    for mode in ("keep", "drop"):
        learner.cfg = replace(CFG, algo=algo, process_reward_mode="turn", uniform_outcome_groups=mode)
        parts = learner._process_advantages(trajs, mine, micro, learner.kept(trajs))
        process = torch.cat([p.abs().sum(1) for p in parts])
        got[mode] = (learner.advantages(trajs).abs(), process)
    keep, drop = got["keep"], got["drop"]
    assert (keep[0][:4] > 0).all() and (keep[1] > 0).all()
    assert (drop[0][2:] == 0).all() and (drop[1][2:] == 0).all()  # group 2: its equal totals are equal outcomes
    torch.testing.assert_close(drop[0][:2], keep[0][:2])
    torch.testing.assert_close(drop[1][:2], keep[1][:2])
    problems = LearnerConfig(algo="ppo", uniform_outcome_groups="drop").validate()
    assert len(problems) == 1 and "'drop' is for grpo/rloo" in problems[0] and "Fix:" in problems[0]


def test_process_reward_mode_add_changes_the_grpo_update_and_none_ignores_turn_rewards(model_path, tokenizer):
    trajs = scored_batch(tokenizer)
    rewarded = _with_turn_rewards(trajs)
    weights = {}
    for name, cfg, batch in [("plain", CFG, trajs), ("none", CFG, rewarded),
                             ("add", replace(CFG, process_reward_mode="add"), rewarded)]:
        learner = Learner(cfg, model_path, temperature=1.0)
        metrics = learner.update(batch)
        weights[name] = (_trained_weights(learner), metrics["advantage_abs_mean"])
        del learner
    plain, none, add = (weights[k] for k in ("plain", "none", "add"))
    assert none[1] == plain[1] and add[1] != plain[1]
    for k in plain[0]:
        torch.testing.assert_close(none[0][k], plain[0][k], atol=0, rtol=0, msg=k)
    assert max((add[0][k] - plain[0][k]).abs().max().item() for k in plain[0] if "lora_B" in k) > 1e-6


def test_process_reward_mode_add_is_for_group_baselines_only():
    assert LearnerConfig(process_reward_mode="add").validate() == []
    problems = LearnerConfig(algo="ppo", process_reward_mode="add", process_reward_coef=-1.0).validate()
    assert any("process_reward_mode: 'add' is for grpo/rloo" in p and "Fix:" in p for p in problems)
    assert any("process_reward_coef: must be a finite number >= 0" in p for p in problems)
    turn = LearnerConfig(algo="ppo", process_reward_mode="turn").validate()
    assert len(turn) == 1 and "'turn' is for grpo/rloo" in turn[0]


def test_normalize_std_false_gives_dr_grpo_advantages(model_path, tokenizer):
    """``learner.normalize_std=false``: the group-centred rewards, not divided by the group's std (Dr. GRPO)."""
    from learners.advantages import grpo_advantages

    trajs = scored_batch(tokenizer)
    scores = torch.tensor([t.reward for t in trajs])
    groups = [t.group_id for t in trajs]
    plain = Learner(replace(CFG, normalize_std=False), model_path, temperature=1.0).advantages(trajs)
    assert torch.allclose(plain, grpo_advantages(scores, groups, normalize_std=False))
    assert not torch.allclose(plain, grpo_advantages(scores, groups))  # the batch's groups have std != 1
