"""The LLM judge: a rubric prompt about one episode (or one turn of it), answered by a judge model, parsed to [0, 1].

Pure functions (rubric, rendering, parsing) plus ``ask_judge``, the one Ray call the reward actor makes per batch.
The judge model is asked for a whole batch at once: the episodes with ``reward.weights.judge`` (the ``judge``
scorer) and every assistant turn with ``reward.process_weights.judge`` (the ``judge`` process scorer), in one call
with a timeout. Who answers (``reward.judge``): ``rollout`` = the rollout engine's base model, a request without a
``LoRARequest`` (no second engine; needs ``rollout.adapter_serving=lora``), or ``actor`` = its own vLLM engine with
any HF model (``actors/judge_actor.py``). Both answer ``judge(prompts, max_tokens, temperature) -> list[str]``,
each prompt one user message rendered with the judge model's own chat template.

Fallback rule: a timeout, an error, a reply without a parseable ``SCORE: <n>`` in 0-10, or no judge at all gives
the value 0.0 (the lowest score: a fallback never pays) and is counted: ``judge_fallback: 1.0`` in the episode's
breakdown (``process_judge_fallback``: the episode's fraction of turns that fell back) and counters in
``RewardActor.stats``. docs/judge.md has the numbers and the limits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import NamedTuple

from actors.trajectory import Trajectory
from envs.tasks import Task

__all__ = ["RUBRIC", "STEP_RUBRIC", "FALLBACK", "MAX_SCORE", "MAX_CHARS", "COUNTERS", "render_conversation",
           "episode_prompt", "step_prompts", "parse_score", "judge_value", "judge_scorer", "judge_step_scorer",
           "ask_judge", "judge_batch", "Verdicts"]

FALLBACK = 0.0  # the value of an episode or turn the judge did not score: the lowest score, so a fallback never pays
MAX_SCORE = 10  # the rubric's scale is 0-10: coarse enough for a small model, fine enough to rank a group
MAX_CHARS = 4000  # conversation characters shown to the judge: ~1.1k SmolLM2 tokens, fits a 2048-token engine
SYSTEM_CHARS = 400  # a system prompt's characters kept: the judge needs the tools, not every instruction

_ANSWER_FORMAT = (f"Write at most two short sentences of reasoning, then end with a last line of the form\n"
                  f"SCORE: <n>\nwhere <n> is an integer from 0 to {MAX_SCORE}.")

RUBRIC = f"""You are grading an AI assistant that can call tools. Read the conversation below and judge the \
assistant.

Criteria:
1. Solved: does the assistant's final answer solve the user's task?
2. Tools: did it call the right tools with well-formed, sensible arguments, and handle tool errors sensibly?
3. Grounded: is the final answer supported by the tool results in the conversation, not invented?

Scale: {MAX_SCORE} = solved, tools used correctly, answer grounded in the tool results; 5 = partly right, or right \
without using the tools' results; 0 = wrong, no final answer, or made up.

<conversation>
{{conversation}}
</conversation>

{_ANSWER_FORMAT}"""

STEP_RUBRIC = f"""You are grading one step of an AI assistant that can call tools. Read the conversation below; \
grade only the assistant message marked STEP TO GRADE (what comes before it is context).

A good step is a sensible next move towards the user's task: a needed tool call with the right tool and correct \
arguments, or a final answer supported by the tool results so far. A bad step is a malformed or pointless call, a \
repeated call, or an answer that is wrong or invented.

Scale: {MAX_SCORE} = clearly the right next step; 5 = acceptable but not helpful; 0 = wrong or harmful.

<conversation>
{{conversation}}
</conversation>

{_ANSWER_FORMAT}"""

_CUT = "\n[... {n} characters cut ...]\n"
_ROLES = {"user": "USER", "assistant": "ASSISTANT", "tool": "TOOL RESULT"}


def render_conversation(messages: Sequence[dict], *, max_chars: int = MAX_CHARS, mark: int | None = None) -> str:
    """The episode as plain labelled text for the judge: ``USER: ...``, ``ASSISTANT: ...``, ``TOOL RESULT: ...``,
    and ``SYSTEM (tools: a, b): ...`` with the system prompt cut to ``SYSTEM_CHARS``. ``mark`` labels the
    ``mark``-th assistant message (0-based) ``ASSISTANT (STEP TO GRADE)``. Longer than ``max_chars``: the middle is
    cut (the question is at the start, the answer at the end), so the text stays within ``max_chars``.

    >>> msgs = [{"role": "system", "content": "Be careful.", "tools": [{"function": {"name": "calculator"}}]},
    ...         {"role": "user", "content": "What is 17 * 23?"},
    ...         {"role": "assistant", "content": '<tool_call>{"name": "calculator"}</tool_call>'},
    ...         {"role": "tool", "content": "391"}, {"role": "assistant", "content": "391."}]
    >>> print(render_conversation(msgs, mark=1))
    SYSTEM (tools: calculator): Be careful.
    USER: What is 17 * 23?
    ASSISTANT: <tool_call>{"name": "calculator"}</tool_call>
    TOOL RESULT: 391
    ASSISTANT (STEP TO GRADE): 391.
    >>> cut = render_conversation(msgs * 40, max_chars=300)
    >>> len(cut) <= 300, cut.startswith("SYSTEM"), "characters cut" in cut, cut.endswith("ASSISTANT: 391.")
    (True, True, True, True)
    """
    lines, turn = [], 0
    for message in messages:
        role, content = message.get("role", ""), str(message.get("content") or "")
        if role == "system":
            names = [(t.get("function") or t).get("name", "?") for t in message.get("tools") or []]
            label = f"SYSTEM (tools: {', '.join(names)})" if names else "SYSTEM"
            if len(content) > SYSTEM_CHARS:
                content = content[:SYSTEM_CHARS] + " [...]"
        else:
            label = _ROLES.get(role, role.upper())
            if role == "assistant":
                label += " (STEP TO GRADE)" if turn == mark else ""
                turn += 1
        lines.append(f"{label}: {content}")
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    marker_room = len(_CUT.format(n=len(text)))
    keep = max(0, max_chars - marker_room)
    head = keep * 2 // 5  # the system prompt and the question; the rest for the end, where the answer is
    tail = keep - head
    return text[:head] + _CUT.format(n=len(text) - keep) + (text[-tail:] if tail else "")


def _fill(rubric: str, conversation: str) -> str:
    return rubric.replace("{conversation}", conversation)  # not str.format: conversations are full of braces


def episode_prompt(trajectory: Trajectory, *, rubric: str | None = None, max_chars: int = MAX_CHARS) -> str:
    """The judge's question about one episode: ``rubric`` (default ``RUBRIC``) around its conversation.

    >>> from rewards._examples import example_trajectory, tool_call
    >>> prompt = episode_prompt(example_trajectory(calls=[tool_call("391")], final_answer="17 * 23 = 391."))
    >>> prompt.splitlines()[-2:]
    ['SCORE: <n>', 'where <n> is an integer from 0 to 10.']
    >>> "TOOL RESULT: 391\\nASSISTANT: 17 * 23 = 391." in prompt
    True
    """
    return _fill(rubric or RUBRIC, render_conversation(trajectory.messages, max_chars=max_chars))


def step_prompts(trajectory: Trajectory, *, rubric: str | None = None, max_chars: int = MAX_CHARS) -> list[str]:
    """One question per assistant turn (``trajectory.turns``; turn k is the k-th assistant message): the
    conversation up to that turn's tool results, the turn marked, around ``rubric`` (default ``STEP_RUBRIC``).

    >>> from rewards._examples import example_trajectory, tool_call
    >>> prompts = step_prompts(example_trajectory(calls=[tool_call("391")], final_answer="391"))
    >>> len(prompts), "(STEP TO GRADE)" in prompts[0], "ASSISTANT: 391" in prompts[0]
    (2, True, False)
    """
    messages = trajectory.messages
    starts = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    prompts = []
    for k in range(len(trajectory.turns)):
        end = starts[k + 1] if k + 1 < len(starts) else len(messages)  # the turn and its tool results
        prompts.append(_fill(rubric or STEP_RUBRIC, render_conversation(messages[:end], max_chars=max_chars,
                                                                        mark=k)))
    return prompts


_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)


def parse_score(reply: str | None) -> float | None:
    """The score of a judge's reply: the last ``SCORE: <n>`` (any case, ``=`` or ``:``, ``**bold**`` and a
    ``/10`` tolerated), as a number in [0, 10]; None when there is none, it is out of range, or it is over a
    different scale (``/5``).

    >>> parse_score("The answer matches the tool result.\\nSCORE: 9")
    9.0
    >>> parse_score("score: 3 ... on reflection, Score = 7/10"), parse_score("**SCORE:** 10")
    (7.0, 10.0)
    >>> parse_score("I think it is good."), parse_score("SCORE: 11"), parse_score("SCORE: -1"), parse_score(None)
    (None, None, None, None)
    >>> parse_score("SCORE: 4/5"), parse_score("SCORE: <n>")
    (None, None)
    """
    matches = _SCORE.findall(reply or "")
    if not matches:
        return None
    number, scale = matches[-1]
    value = float(number)
    if (scale and int(scale) != MAX_SCORE) or not 0 <= value <= MAX_SCORE:
        return None
    return value


def judge_value(reply: str | None) -> float | None:
    """A reply mapped to [0, 1] (score / 10), or None when it has no valid score (the caller falls back).

    >>> judge_value("SCORE: 7"), judge_value("no idea")
    (0.7, None)
    """
    score = parse_score(reply)
    return None if score is None else score / MAX_SCORE


def judge_scorer(trajectory: Trajectory, task: Task) -> float:
    """The ``SCORERS`` entry ``judge``: the fallback 0.0. The judge answers whole batches in one call, so only the
    reward actor asks it and hands ``rewards.combine`` the values (``given``), counting every fallback; called on
    its own, with no judge to ask, this is the value a fallback gets.

    >>> from rewards._examples import example_task, example_trajectory
    >>> judge_scorer(example_trajectory(final_answer="391"), example_task())
    0.0
    """
    return FALLBACK


def judge_step_scorer(trajectory: Trajectory, task: Task) -> list[float]:
    """The ``PROCESS_SCORERS`` entry ``judge``: like ``judge_scorer``, the fallback for every turn; the reward
    actor asks the judge per batch and hands ``rewards.process_rewards`` the values.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> judge_step_scorer(example_trajectory(calls=[tool_call("391")], final_answer="391"), example_task())
    [0.0, 0.0]
    """
    return [FALLBACK] * len(trajectory.turns)


# -- Asking the judge: the one Ray call per batch ----------------------------------------------------------------

def ask_judge(handle, prompts: Sequence[str], *, max_tokens: int, timeout_s: float,
              retries: int = 0) -> tuple[list[str] | None, str]:
    """``handle.judge.remote(prompts, max_tokens, 0.0)`` (greedy), waited on for at most ``timeout_s`` in all.

    Returns ``(replies, "ok")``, or ``(None, why)`` with why ``"timeout"`` (the budget ran out; the request is
    cancelled as far as Ray can: a generation already running on the engine finishes there) or ``"error"`` (the
    judge raised or answered the wrong number of replies ``retries + 1`` times). A timeout is not retried: it
    would hold the training step up again.
    """
    import ray
    from ray.exceptions import GetTimeoutError

    if not prompts:
        return [], "ok"
    deadline = time.monotonic() + timeout_s
    for _ in range(retries + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "timeout"
        ref = handle.judge.remote(list(prompts), max_tokens, 0.0)
        try:
            replies = ray.get(ref, timeout=left)
        except GetTimeoutError:
            try:
                ray.cancel(ref)
            except Exception:  # best effort: the answer is no longer wanted either way
                pass
            return None, "timeout"
        except Exception:  # a dead or failing judge costs the batch its judge values, not the training step
            continue
        if isinstance(replies, (list, tuple)) and len(replies) == len(prompts):
            return [r if isinstance(r, str) else "" for r in replies], "ok"
    return None, "error"


COUNTERS = ("judge_prompts", "judge_fallbacks", "judge_timeout", "judge_error", "judge_unparseable", "judge_unset")


class Verdicts(NamedTuple):
    """The judge's values for a batch, one entry per trajectory, ready for ``combine`` and ``process_rewards``."""

    given: list[dict[str, float]]  # {"judge": value} when weights.judge is set, else {}
    given_turns: list[dict[str, list[float]]]  # {"judge": one value per turn} when process_weights.judge is set
    notes: list[dict[str, float]]  # breakdown entries: judge_fallback 1.0, process_judge_fallback (turn fraction)
    counts: dict[str, int]  # COUNTERS, in prompts: asked, fell back (all), and by reason


def judge_batch(handle, trajectories: Sequence[Trajectory], cfg) -> Verdicts:
    """Ask the judge ``handle`` (None: there is none) about every episode (``cfg.weights.judge`` != 0) and every
    turn (``cfg.process_weights.judge`` != 0) of ``trajectories`` in one call (``ask_judge``), with ``cfg`` a
    ``RewardConfig``; every prompt without a valid score gets ``FALLBACK``, counted by reason: ``judge_timeout``,
    ``judge_error``, ``judge_unparseable``, ``judge_unset`` (no judge handle).
    """
    episode_weight, turn_weight = cfg.judge_weights()
    prompts: list[str] = []
    where: list[tuple[int, int | None]] = []  # (trajectory, turn or None for the episode)
    for i, t in enumerate(trajectories):
        if episode_weight:
            prompts.append(episode_prompt(t, rubric=cfg.judge_rubric, max_chars=cfg.judge_max_chars))
            where.append((i, None))
        if turn_weight:
            steps = step_prompts(t, max_chars=cfg.judge_max_chars)
            prompts += steps
            where += [(i, k) for k in range(len(steps))]
    if handle is None:
        replies, why = None, "unset"
    else:
        replies, why = ask_judge(handle, prompts, max_tokens=cfg.judge_max_tokens, timeout_s=cfg.judge_timeout_s,
                                 retries=cfg.judge_retries)
    values = [judge_value(r) for r in replies] if replies is not None else [None] * len(prompts)
    counts = dict.fromkeys(COUNTERS, 0)
    counts["judge_prompts"] = len(prompts)
    given: list[dict[str, float]] = [{} for _ in trajectories]
    given_turns = [{"judge": [FALLBACK] * len(t.turns)} if turn_weight else {} for t in trajectories]
    notes: list[dict[str, float]] = [{} for _ in trajectories]
    turn_fallbacks = [0] * len(trajectories)
    for (i, turn), value in zip(where, values, strict=True):
        if value is None:
            counts["judge_fallbacks"] += 1
            counts[f"judge_{why if replies is None else 'unparseable'}"] += 1
        if turn is None:
            given[i]["judge"] = FALLBACK if value is None else value
            if value is None:
                notes[i]["judge_fallback"] = 1.0
        else:
            given_turns[i]["judge"][turn] = FALLBACK if value is None else value
            turn_fallbacks[i] += value is None
    for i, t in enumerate(trajectories):
        if turn_fallbacks[i]:
            notes[i]["process_judge_fallback"] = turn_fallbacks[i] / len(t.turns)
    return Verdicts(given, given_turns, notes, counts)
