"""Advantage estimators: token-level GAE (with a value head), GRPO and RLOO group baselines, process supervision
for GRPO/RLOO (group-normalised turn rewards summed from each token's turn on), and the helpers that turn sequence
scores and per-turn rewards into [B, T] token tensors.

Conventions shared by every function here:

- Token tensors are [B, T], right-padded, aligned with ``mask`` [B, T]: 1.0 on a token the policy sampled (it
  enters the loss), 0.0 on prompt, tool results, the runner's own turn tokens and padding. A mask-0 position
  never influences any output: its inputs are read through ``torch.where`` (so even ``inf``/``nan`` there are
  harmless) and its outputs are 0.
- Everything here is a target, not a prediction: outputs carry no gradient (inputs are detached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from learners.losses import keep_masked

__all__ = ["broadcast_to_tokens", "gae", "grpo_advantages", "groups_with_contrast", "normalize_step_rewards",
           "rloo_advantages", "steps_to_go", "token_rewards", "turn_local", "whiten"]


# ALGO LOGIC: GAE over the sampled tokens only ---------------------------------------------------------------------


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over each row's sampled tokens (Schulman et al. 2016, "High-Dimensional
    Continuous Control Using Generalized Advantage Estimation").

    Let ``t_1 < ... < t_n`` be the mask-1 positions of a row. With ``V(t_{n+1}) = 0`` (the episode ends after its
    last sampled token)::

        delta_k = r(t_k) + gamma * V(t_{k+1}) - V(t_k)
        A_k     = delta_k + gamma * lam * A_{k+1}          (A_{n+1} = 0)
        R_k     = A_k + V(t_k)                              (the value target)

    Mask-0 tokens (a tool result between two turns, padding) are not steps of the MDP: the policy did not choose
    them, so the step after a turn's last token is the next turn's first sampled token and *its* value is the
    bootstrap, not the tool token's. Their rewards and values are ignored, and their advantages and returns are 0.

    Args:
        rewards: [B, T] per-token rewards (see ``token_rewards``).
        values: [B, T] value-head predictions V(t) for the state before token t is sampled.
        mask: [B, T] 1.0 on sampled tokens.
        gamma: discount per sampled token.
        lam: GAE lambda (1.0: Monte-Carlo returns minus V; 0.0: one-step TD).

    Returns:
        ``(advantages, returns)``, both [B, T] and 0 on mask-0 positions.
    """
    keep = mask.bool()
    rewards, values = keep_masked(rewards.detach().float(), mask), keep_masked(values.detach().float(), mask)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # value of the next *sampled* token of each row; 0 after the last
    next_adv = torch.zeros_like(values[:, 0])
    # A backward scan carrying (next_value, next_adv) per row: mask-0 columns leave the carry untouched, which is
    # exactly "skip the token". T is at most a few thousand, a Python loop over it is cheap next to the model.
    for t in range(values.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        k = keep[:, t]
        advantages[:, t] = torch.where(k, adv, 0.0)
        next_value = torch.where(k, values[:, t], next_value)
        next_adv = torch.where(k, adv, next_adv)
    returns = keep_masked(advantages + values, mask)
    return advantages, returns


# ALGO LOGIC: group baselines (one score per episode) --------------------------------------------------------------


def _group_index(group_ids: Sequence[str], n: int, device: torch.device) -> tuple[Tensor, int]:
    if len(group_ids) != n:
        raise ValueError(f"len(group_ids)={len(group_ids)} != number of scores {n}")
    codes: dict[str, int] = {}
    idx = [codes.setdefault(g, len(codes)) for g in group_ids]
    return torch.tensor(idx, dtype=torch.long, device=device), len(codes)


@torch.no_grad()
def grpo_advantages(scores: Tensor, group_ids: Sequence[str], eps: float = 1e-6,
                    normalize_std: bool = True) -> Tensor:
    """GRPO outcome advantages (Shao et al. 2024, DeepSeekMath, eq. for outcome supervision)::

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)      for episode i in group g

    ``std_g`` is the *sample* standard deviation (Bessel's correction, divide by n - 1). The paper writes only
    "std"; TRL's ``GRPOTrainer`` and veRL's ``compute_grpo_outcome_advantage`` both call ``torch.std`` (unbiased
    by default), so we match them: a side-by-side run with TRL then sees the same advantages. (For a group of 2
    the two differ by sqrt(2): +-0.71 here against +-1 with the population std.)

    A group of one has no baseline and a group whose scores are all equal has no signal: both get exactly 0 (set
    explicitly, because ``(r - mean) / eps`` of float round-off would otherwise be a spurious nonzero value).

    ``normalize_std=False`` drops the division (Liu et al. 2025, "Understanding R1-Zero-Like Training", Dr. GRPO:
    dividing by the std up-weights groups that are nearly solved or nearly failed).

    Args:
        scores: [N] one scalar reward per episode.
        group_ids: N group keys (``Trajectory.group_id``); groups may be interleaved and of unequal size.
    Returns:
        [N] advantages, float32.
    """
    scores = scores.detach().float()
    idx, g = _group_index(group_ids, scores.shape[0], scores.device)
    count = torch.zeros(g, device=scores.device).index_add_(0, idx, torch.ones_like(scores))
    mean = torch.zeros(g, device=scores.device).index_add_(0, idx, scores) / count
    centered = scores - mean[idx]
    lo = torch.full((g,), float("inf"), device=scores.device).scatter_reduce(0, idx, scores, "amin")
    hi = torch.full((g,), float("-inf"), device=scores.device).scatter_reduce(0, idx, scores, "amax")
    no_signal = (count[idx] < 2) | (lo[idx] == hi[idx])
    if normalize_std:
        sq = torch.zeros(g, device=scores.device).index_add_(0, idx, centered**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()
        centered = centered / (std[idx] + eps)
    return torch.where(no_signal, 0.0, centered)


def groups_with_contrast(outcomes: Sequence[float], group_ids: Sequence[str]) -> Tensor:
    """[N] 1.0 for an episode whose group has at least two different outcomes, else 0.0: DAPO's dynamic-sampling
    filter (Yu et al. 2025, "DAPO", section 3.2; veRL's ``algorithm.filter_groups`` with ``metric: acc``), which
    we apply by zeroing the advantages instead of resampling (``learner.uniform_outcome_groups: drop``).

    Why by outcome and not by total reward: in a group where every episode failed, the totals still differ by
    shaping (format, escalation, process rewards), and GRPO then pushes toward whatever failure the shaping likes
    best. On support_desk that was a clean give-up after a made-up lookup (docs/envs/support_desk.md, stop 29).

    >>> groups_with_contrast([0, 1, 0, 0, 1, 1], ["a", "a", "b", "b", "c", "c"]).tolist()
    [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """
    if len(group_ids) != len(outcomes):
        raise ValueError(f"len(group_ids)={len(group_ids)} != number of outcomes {len(outcomes)}")
    seen: dict[str, set[float]] = {}
    for g, o in zip(group_ids, outcomes):
        seen.setdefault(g, set()).add(float(o))
    return torch.tensor([1.0 if len(seen[g]) > 1 else 0.0 for g in group_ids])


@torch.no_grad()
def rloo_advantages(scores: Tensor, group_ids: Sequence[str]) -> Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics: Revisiting
    REINFORCE Style Optimization for Learning from Human Feedback in LLMs")::

        A_i = r_i - 1/(n-1) * sum_{j != i in group} r_j  =  n/(n-1) * (r_i - mean_g(r))

    The baseline excludes the episode itself, so the estimator stays unbiased. A group of one gets 0.

    Args:
        scores: [N] one scalar reward per episode.
        group_ids: N group keys.
    Returns:
        [N] advantages, float32.
    """
    scores = scores.detach().float()
    idx, g = _group_index(group_ids, scores.shape[0], scores.device)
    count = torch.zeros(g, device=scores.device).index_add_(0, idx, torch.ones_like(scores))[idx]
    total = torch.zeros(g, device=scores.device).index_add_(0, idx, scores)[idx]
    others_mean = (total - scores) / (count - 1).clamp(min=1)
    return torch.where(count < 2, 0.0, scores - others_mean)


# ALGO LOGIC: process supervision for group baselines (one reward per turn) ----------------------------------------


def normalize_step_rewards(step_rewards: Sequence[Sequence[float]], group_ids: Sequence[str], *,
                           leave_one_out: bool = False, normalize_std: bool = True,
                           eps: float = 1e-6) -> list[list[float]]:
    """Group-normalised step (turn) rewards, the first half of GRPO with process supervision (Shao et al. 2024,
    "DeepSeekMath", section 4.1.3). With ``R_g`` all the step rewards of all episodes of group ``g``::

        r~(i, k) = (r(i, k) - mean(R_g)) / std(R_g)                     (GRPO: the paper's normalisation)

    ``std`` is the sample standard deviation, as ``grpo_advantages`` uses for the outcome (the paper does not say
    which; over a group's 8-16 steps the two differ by a few percent). ``normalize_std=False`` keeps only the
    centring. ``leave_one_out=True`` is the RLOO flavour: the baseline of episode ``i``'s steps is the mean of the
    *other* episodes' steps in the group, so an episode is never compared with itself (as ``rloo_advantages``).

    A group with fewer than 2 steps, with all its steps equal, or (leave-one-out) an episode whose group has no
    other steps, gets exactly 0: no baseline, or no signal.

    Args:
        step_rewards: per episode, one reward per step (turn with sampled tokens), in order; may be empty.
        group_ids: one group key per episode.
    Returns:
        The normalised rewards, shaped like ``step_rewards``.
    """
    if len(group_ids) != len(step_rewards):
        raise ValueError(f"len(group_ids)={len(group_ids)} != number of episodes {len(step_rewards)}")
    pooled: dict[str, list[float]] = {}
    for g, steps in zip(group_ids, step_rewards):
        pooled.setdefault(g, []).extend(float(r) for r in steps)
    out = []
    for g, steps in zip(group_ids, step_rewards):
        group = pooled[g]
        n = len(group)
        if n < 2 or min(group) == max(group):
            out.append([0.0] * len(steps))
            continue
        mean = sum(group) / n
        scale = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1)) + eps if normalize_std else 1.0
        if leave_one_out:
            others = n - len(steps)
            if others == 0:
                out.append([0.0] * len(steps))
                continue
            baseline = (sum(group) - sum(float(r) for r in steps)) / others
        else:
            baseline = mean
        out.append([(float(r) - baseline) / scale for r in steps])
    return out


@torch.no_grad()
def steps_to_go(turn_rewards: Sequence[Sequence[tuple[int, float]]], mask: Tensor) -> Tensor:
    """The second half of GRPO with process supervision (DeepSeekMath, section 4.1.3): the advantage of a token is
    the sum of the (normalised) rewards of the steps ending at or after it::

        A(b, t) = sum over turns (end, r~) of row b with index(end) >= t:  r~          (t sampled, else 0)

    where ``index(end)`` is the last sampled token before the turn's exclusive ``end`` (where ``token_rewards``
    puts a turn reward). Every token of a turn gets that turn's reward plus all later turns' rewards; tool-result
    and other mask-0 tokens get 0. With ``learner.process_reward_mode: add`` the learner adds this to the outcome
    advantage: ``A(b, t) = A_outcome(b) + process_reward_coef * steps_to_go(b, t)``.

    Args:
        turn_rewards: per row, ``(end, reward)`` per turn, as ``token_rewards`` takes them (``Batch.turn_ends``
            with the rewards replaced by ``normalize_step_rewards``).
        mask: [B, T] 1.0 on sampled tokens.
    Returns:
        [B, T] float32, 0 on mask-0 positions.
    """
    placed = token_rewards(torch.zeros(mask.shape[0], device=mask.device), turn_rewards, mask)
    return keep_masked(placed.flip(1).cumsum(1).flip(1), mask)


@torch.no_grad()
def turn_local(turn_rewards: Sequence[Sequence[tuple[int, float]]], mask: Tensor) -> Tensor:
    """Process supervision without the sum: every sampled token gets the (normalised) reward of its own turn only::

        A(b, t) = r~(k)     for the turn k of row b with end(k-1) <= t < end(k)      (t sampled, else 0)

    where ``end`` is the turn's exclusive end (``Turn.end``) and ``end(-1) = 0``. ``steps_to_go`` also gives a turn
    every *later* turn's reward, so a penalty-only scorer (``caller_errors``, ``invented_ids``) blames the valid
    first call of an episode for the errors that followed it. In a group where every episode failed, that favours
    the shortest failure (docs/envs/support_desk.md, "Turn penalties summed to the end", stop 29). With
    ``learner.process_reward_mode: turn`` the learner adds this to the outcome advantage instead.

    Args:
        turn_rewards: per row, ``(end, reward)`` per turn in order, as ``steps_to_go`` takes them.
        mask: [B, T] 1.0 on sampled tokens.
    Returns:
        [B, T] float32, 0 on mask-0 positions.
    """
    b, t = mask.shape
    if len(turn_rewards) != b:
        raise ValueError(f"turn_rewards has {len(turn_rewards)} rows, mask has {b}")
    out = torch.zeros(b, t, dtype=torch.float32, device=mask.device)
    for row, turns in enumerate(turn_rewards):
        start = 0
        for end, reward in turns:
            if not start <= end <= t:
                raise ValueError(f"row {row}: turn end {end} is out of order or past T={t}")
            out[row, start:end] = float(reward)
            start = end
    return keep_masked(out, mask)


# Token-tensor helpers ----------------------------------------------------------------------------------------------


def broadcast_to_tokens(seq_adv: Tensor, mask: Tensor) -> Tensor:
    """Give every sampled token of row b the sequence advantage ``seq_adv[b]`` (GRPO/RLOO outcome supervision:
    ``A(b, t) = seq_adv[b] * mask(b, t)``); mask-0 positions get 0. Returns [B, T]."""
    return keep_masked(seq_adv.detach().float()[:, None].expand(mask.shape), mask)


@torch.no_grad()
def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Masked whitening over all mask-1 entries of the batch::

        y = (x - mean) / sqrt(var + eps)                  (shift_mean=True)
        y = (x - mean) / sqrt(var + eps) + mean           (shift_mean=False: rescale only, keep the mean)

    ``mean`` and ``var`` are the masked mean and *population* variance (divide by the token count: a batch has
    thousands of tokens, Bessel's correction changes nothing there and would be undefined for one token). The
    usual PPO advantage normalisation (OpenAI baselines, TRL ``masked_whiten``). Statistics are of this tensor
    only: under data parallelism each rank whitens its own shard. Mask-0 positions come out 0.
    """
    x = keep_masked(x.detach().float(), mask)
    n = mask.float().sum().clamp(min=1)
    mean = x.sum() / n
    var = keep_masked((x - mean) ** 2, mask).sum() / n
    y = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return keep_masked(y, mask)


@torch.no_grad()
def token_rewards(outcome: Tensor, turn_rewards: Sequence[Sequence[tuple[int, float]]], mask: Tensor,
                  kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Per-token rewards for ``gae``::

        r(b, t) = outcome[b] * [t = last sampled token of row b]
                + sum over turns (end, rho) of row b: rho * [t = last sampled token before `end`]
                - kl_coef * kl(b, t) * mask(b, t)

    The last term is the KL penalty folded into the reward ("k1 in reward", Ziegler et al. 2019; Ouyang et al.
    2022): ``kl`` is usually ``kl_penalty(logprobs, ref_logprobs, "k1")``.

    Args:
        outcome: [B] episode rewards (``Trajectory.reward``).
        turn_rewards: per row, ``(end, reward)`` per turn, ``end`` being the *exclusive* end of the turn's span
            (``Turn.end``), so the reward lands on token ``end - 1`` when that token is sampled, else on the last
            sampled token before it.
        mask: [B, T] 1.0 on sampled tokens.
        kl: optional [B, T] per-token KL estimate.
        kl_coef: its weight (beta).

    A row with no sampled token (padding) receives nothing: none of it enters the loss anyway. A turn reward with
    no sampled token before its ``end`` in a row that has sampled tokens is a malformed span: ``ValueError``.
    """
    keep = mask.bool()
    b, t = mask.shape
    if outcome.shape[0] != b or len(turn_rewards) != b:
        raise ValueError(f"outcome has {outcome.shape[0]} rows and turn_rewards {len(turn_rewards)}, mask has {b}")
    # last_at[b, t] = index of the last sampled token at or before t (-1 if none): one cummax instead of a search.
    pos = torch.arange(t, device=mask.device).expand(b, t)
    last_at = torch.where(keep, pos, -1).cummax(dim=1).values
    out = torch.zeros(b, t, dtype=torch.float32, device=mask.device)
    has_tokens = last_at[:, -1] >= 0
    rows = torch.nonzero(has_tokens).squeeze(1)
    out[rows, last_at[rows, -1]] += outcome.detach().float().to(mask.device)[rows]
    for row, turns in enumerate(turn_rewards):
        if not has_tokens[row]:
            continue
        for end, reward in turns:
            if not 0 < end <= t or last_at[row, end - 1] < 0:
                raise ValueError(f"row {row}: turn end {end} has no sampled token before it (T={t})")
            out[row, last_at[row, end - 1]] += reward
    if kl is not None and kl_coef:
        out = out - kl_coef * keep_masked(kl.detach().float(), mask)
    return out
