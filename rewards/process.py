"""Process rewards from rules or from a judge: one value per assistant turn, written into ``Turn.reward`` by the
reward actor.

Every process scorer is a pure function ``score(trajectory, task) -> list[float]`` returning exactly one value per
turn of ``trajectory.turns`` (configurable values are keyword-only arguments, filled from
``RewardConfig.process_params``). ``PROCESS_SCORERS`` names them; ``reward.process_weights`` weighs them, and the
weighted sum per turn is the turn's reward. Off by default (no weights): ``Turn.reward`` is then left as given.

The defaults mirror ``rewards.tool_shaping`` turn by turn: a failed call turn -0.2 (``tool_failed``), a call turn
that ran 0.1 (``tool_wrong``), and the turn whose call first produced the answer 0.1 + 0.2 = 0.3 (``tool_correct``).

How the learners use the turn rewards: PPO adds each one to the reward of its turn's last sampled token before GAE
(``learners.advantages.token_rewards``); GRPO/RLOO use them only with ``learner.process_reward_mode: add``
(``learners.advantages.normalize_step_rewards`` and ``steps_to_go``). Farming risk, said plainly: every call turn
that runs earns ``call_ok``, so more call turns earn more (bounded by ``rollout.max_turns``); ``tool_progress``
cannot be farmed (it pays once per episode), nor can ``escalation`` (``rewards.safety.escalation_turns``: the
episode scorer's one judgement, placed on the escalating turn), ``invented_ids`` (``rewards.invented_ids``) or
``caller_errors`` (``rewards.caller_errors``): both are only penalties. ``judge`` (an LLM judge's 0-10 score of each
turn, / 10; asked by the reward actor for the whole batch in one call, ``rewards.judge``, docs/judge.md) pays every
turn it likes, so it can be farmed the same way as ``call_ok``. Watch ``reward/process_mean`` against
``reward/outcome``: the reward-hacking monitor (``rewards.monitor``) does, when process rewards are on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.caller_errors import caller_errors
from rewards.invented_ids import invented_ids
from rewards.judge import judge_step_scorer
from rewards.safety import escalation_turns
from rewards.tool_shaping import call_turn, tool_results
from rewards.verifiers import verifier_for

__all__ = ["PROCESS_SCORERS", "ProcessScorer", "tool_call_validity", "tool_progress", "process_rewards",
           "CALL_OK", "CALL_FAILED", "PROGRESS"]

CALL_OK, CALL_FAILED, PROGRESS = 0.1, -0.2, 0.2

ProcessScorer = Callable[..., list[float]]  # score(trajectory, task, **params) -> one float per turn


def tool_call_validity(trajectory: Trajectory, task: Task, *, ok: float = CALL_OK,
                       failed: float = CALL_FAILED) -> list[float]:
    """Per turn: ``ok`` when the turn made tool calls and every one parsed and ran (``ToolCallRecord.ok``; a
    tolerantly repaired call counts as parsed), ``failed`` when any call of the turn failed (unreadable, unknown
    tool, bad arguments, the tool raised or timed out), 0 for a turn without calls (the final answer, or text
    cut by the token limit). ``task`` is unused: validity does not depend on the question.

    >>> from rewards._examples import example_task, example_trajectory, parse_error, tool_call
    >>> calls = [parse_error(), tool_call("error: division by zero", ok=False), tool_call("381"), tool_call("391")]
    >>> tool_call_validity(example_trajectory(calls=calls, final_answer="391"), example_task())
    [-0.2, -0.2, 0.1, 0.1, 0.0]
    """
    per_turn: list[list[bool]] = [[] for _ in trajectory.turns]
    for record in trajectory.tool_calls:
        per_turn[call_turn(record, trajectory)].append(bool(record.ok))
    return [0.0 if not oks else (ok if all(oks) else failed) for oks in per_turn]


def tool_progress(trajectory: Trajectory, task: Task, *, value: float = PROGRESS) -> list[float]:
    """Per turn: ``value`` times the progress its calls made towards the answer. A call's score is the env's
    verifier (``rewards.verifiers.verifier_for``) applied to its result as if it were the final answer (1/0, or a
    score in [0, 1]); failed calls score 0. A turn earns ``value * (best score of its calls - best score of all
    earlier calls)`` when positive, else 0: the first turn whose call produced the answer earns ``value`` and
    repeating that call earns nothing, so the episode's total is at most ``value`` and spamming calls cannot farm it.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> calls = [tool_call("error: bad", ok=False), tool_call("381"), tool_call("391"), tool_call("391")]
    >>> tool_progress(example_trajectory(calls=calls, final_answer="391"), example_task(answer=391))
    [0.0, 0.0, 0.2, 0.0, 0.0]
    """
    best_in_turn = [0.0] * len(trajectory.turns)
    if trajectory.tool_calls:
        verify = verifier_for(task.env)
        for record, result in zip(trajectory.tool_calls, tool_results(trajectory), strict=True):
            turn = call_turn(record, trajectory)
            if record.ok:
                score = min(1.0, max(0.0, float(verify(task, result))))
                best_in_turn[turn] = max(best_in_turn[turn], score)
    out, best = [], 0.0
    for score in best_in_turn:
        out.append(value * (score - best) if score > best else 0.0)
        best = max(best, score)
    return out


PROCESS_SCORERS: dict[str, ProcessScorer] = {
    "tool_call_validity": tool_call_validity,
    "tool_progress": tool_progress,
    "judge": judge_step_scorer,  # an LLM judge's score of each turn in [0, 1], asked per batch (reward.judge)
    "escalation": escalation_turns,  # rewards.safety.escalation on the escalating turn; values as the episode one's
    "invented_ids": invented_ids,  # -1 on a turn whose call passes an id the prompt and earlier results never showed
    "caller_errors": caller_errors,  # -1 on a turn whose call the env rejected unread (bad arguments, unknown tool)
}


def process_rewards(trajectory: Trajectory, task: Task, weights: dict[str, float], params: Callable[[str], dict],
                    given: Mapping[str, Sequence[float]] | None = None) -> tuple[list[float], dict[str, float]]:
    """The weighted per-turn sum of the process scorers in ``weights`` and a breakdown for the logs:
    ``"process_mean"`` (mean over turns of the weighted sum, 0 without turns), ``"process_<name>"`` (mean over
    turns of each scorer's unweighted values) and ``"process_<name>_error": 1.0`` for a scorer that raised or
    returned the wrong number of values (it then counts as 0 on every turn, as ``rewards.combine`` does for
    episode scorers: one odd trajectory costs a component, not the training step). ``given``: per-turn values the
    caller computed for whole batches (the judge's, from the reward actor), used instead of calling those scorers.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> traj = example_trajectory(calls=[tool_call("381"), tool_call("391")], final_answer="391")
    >>> turns, parts = process_rewards(traj, example_task(), {"tool_call_validity": 1.0, "tool_progress": 0.5},
    ...                                lambda name: {})
    >>> [round(r, 6) for r in turns], round(parts["process_mean"], 6), sorted(parts)
    ([0.1, 0.2, 0.0], 0.1, ['process_mean', 'process_tool_call_validity', 'process_tool_progress'])
    """
    n = len(trajectory.turns)
    total = [0.0] * n
    breakdown: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name, weight in weights.items():
        try:
            scored = given[name] if given and name in given else PROCESS_SCORERS[name](trajectory, task, **params(name))
            values = [float(v) for v in scored]
            if len(values) != n:
                raise ValueError(f"{name} returned {len(values)} values for {n} turns")
        except Exception:  # contained by design (docstring): a scorer bug costs a component, not the step
            values, errors[f"process_{name}_error"] = [0.0] * n, 1.0
        breakdown[f"process_{name}"] = sum(values) / n if n else 0.0
        total = [acc + weight * v for acc, v in zip(total, values)]
    breakdown["process_mean"] = sum(total) / n if n else 0.0
    breakdown.update(errors)
    return total, breakdown
