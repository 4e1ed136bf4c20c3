"""SYNTHETIC scored calculator episodes: the scripted expert against corrupted variants of it, for reward-model tests.

Real scored trajectories with diverse rewards are slow to get from the policy (a rollout engine, minutes per
batch), so the reward-model test and the documented numbers use these. They are synthetic in what the "model" says
(scripted text, made-up behavior logprobs) and real in everything else: each episode is played by the real runner
(``actors.episode.run_episodes``: real tokenizer, chat template, tool-call parser, the calculator tool itself) and
scored by the real reward actor (``rewards.RewardActor`` with the default weights), so a group is exactly what a
training step writes to ``trajectories/step_*.parquet``.

Each task gives one group of two episodes: the expert (sample 0) and one corruption (sample 1):

- ``transposed_answer``: the right call and result, then a final answer with two adjacent digits of the result
  swapped (391 -> 319).
- ``wrong_digit``: the right call and result, then one digit of the result replaced by another in the final answer
  (391 -> 371, the new digit drawn uniformly from the other nine).
- ``transposed_call``: the call's expression has two adjacent digits of one operand swapped (17 * 23 -> 71 * 23);
  the tool answers it honestly and the final answer restates it (``71 * 23 = 1633.``): every turn agrees with the
  one before, and only the question shows the mistake.
- ``failed_call``: a call with a misnamed argument (a tool error), then a guessed answer.
- ``no_call``: a guessed answer without the tool.

Why the default kinds are ``transposed_answer`` and ``wrong_digit`` (``DEFAULT_KINDS``): chosen and rejected then
hold the same tokens in another order (SmolLM2's tokenizer splits numbers into single digits), or differ in one
digit drawn at random, and have exactly the same length. No bag-of-words model and no length rule can separate
them; the reward model has to compare the final answer with the tool's result. ``transposed_call`` is as opaque to
both baselines, but what gives it away is the question, ~50 tokens before the end: at the test's budget the
model reaches 0.76 held-out accuracy, under the 0.9 bar (docs/reward_model.md). ``failed_call`` and ``no_call`` are
what real policies do, but a bag of words wins on them (``error``, a missing ``<tool_call>``) and both change the
length by 20-60 tokens, so length matching drops them: they show those effects, not what a model learns.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import replace

from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, Generation, run_episodes
from actors.trajectory import Trajectory
from envs.calculator import CALCULATOR_TOOL, calculate, generate_tasks
from envs.tasks import Task
from rewards.config import RewardConfig
from rewards.preferences import Preference, PreferenceStats, build_preferences
from rewards.reward_actor import RewardActor

__all__ = ["CORRUPTIONS", "DEFAULT_KINDS", "transpose_digits", "change_digit", "corrupted_script", "expert_script",
           "ScriptedPolicy", "synthetic_episodes", "synthetic_preferences"]

CORRUPTIONS = ("transposed_answer", "wrong_digit", "transposed_call", "failed_call", "no_call")
DEFAULT_KINDS = ("transposed_answer", "wrong_digit")  # same length, same or random tokens: see the module doc


def _digit_spots(text: str) -> list[int]:
    """Positions i where text[i] and text[i + 1] are different digits of one number and swapping them does not
    give the number a leading zero."""
    spots = []
    for i in range(len(text) - 1):
        a, b = text[i], text[i + 1]
        starts_number = i == 0 or not text[i - 1].isdigit()
        if a.isdigit() and b.isdigit() and a != b and not (starts_number and b == "0"):
            spots.append(i)
    return spots


def transpose_digits(text: str, k: int) -> str | None:
    """``text`` with the ``k``-th (mod count) eligible pair of adjacent different digits swapped; None if none.

    >>> transpose_digits("391", 0), transpose_digits("391", 1), transpose_digits("17 * 23", 1)
    ('931', '319', '17 * 32')
    >>> transpose_digits("105", 0), transpose_digits("111", 0)  # 015 would start with a zero
    ('150', None)
    """
    spots = _digit_spots(text)
    if not spots:
        return None
    i = spots[k % len(spots)]
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def change_digit(text: str, k: int, shift: int = 1) -> str:
    """``text`` with its ``k``-th (mod count) digit moved up by ``shift`` (mod 10, never to itself); a leading
    digit that would become 0 goes one further.

    >>> change_digit("391", 1), change_digit("391", 2, shift=5), change_digit("-9", 0)
    ('301', '396', '-1')
    """
    where = [i for i, c in enumerate(text) if c.isdigit()]
    i = where[k % len(where)]
    new = (int(text[i]) + 1 + (shift - 1) % 9) % 10
    if new == 0 and (i == 0 or not text[i - 1].isdigit()):
        new = 1 if text[i] != "1" else 2
    return text[:i] + str(new) + text[i + 1:]


def _call(arguments: dict) -> str:
    return f"<tool_call>\n{json.dumps({'name': CALCULATOR_TOOL.name, 'arguments': arguments})}\n</tool_call>"


def expert_script(task: Task) -> list[str]:
    """The scripted expert's assistant turns (as ``envs.calculator.scripted_expert``): one call, then the answer."""
    expression = task.meta_value()["expression"]
    return [_call({"expression": expression}), f"{expression} = {calculate(expression)}."]


def corrupted_script(task: Task, kind: str, k: int) -> tuple[str, list[str]]:
    """``(kind played, assistant turns)`` of one corruption; ``k`` picks the digit (and the new one). A
    transposition that is not possible (a result like 111) falls back to ``wrong_digit``, and the kind played says
    so."""
    expression = task.meta_value()["expression"]
    result = calculate(expression)
    guess = f"{expression} = {change_digit(result, k, shift=1 + k // 7 % 9)}."
    if kind == "transposed_answer" and (swapped := transpose_digits(result, k)) is not None:
        return kind, [_call({"expression": expression}), f"{expression} = {swapped}."]
    if kind == "transposed_call" and (wrong := transpose_digits(expression, k)) is not None:
        return kind, [_call({"expression": wrong}), f"{wrong} = {calculate(wrong)}."]
    if kind == "failed_call":
        return kind, [_call({"expr": expression}), guess]
    if kind == "no_call":
        return kind, [guess]
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}. Fix: use one of {', '.join(CORRUPTIONS)}")
    return "wrong_digit", [_call({"expression": expression}), guess]


class ScriptedPolicy:
    """A generation backend that replays fixed assistant turns per episode, cut at the rollout's stop string the
    way vLLM cuts it (``include_stop_str_in_output``); a final answer ends with EOS. Episodes are told apart by their
    first prompt, so one ``run_episodes`` call must not hold two episodes of the same task."""

    def __init__(self, tokenizer, scripts: Sequence[Sequence[str]]):
        self.tokenizer, self.eos_token_id = tokenizer, tokenizer.eos_token_id
        self._scripts = [list(s) for s in scripts]
        self._starts: list[list[int]] = []  # each episode's first prompt, in the order the runner first sent them

    def generate(self, prompts, sampling, versions) -> list[Generation]:
        outs = []
        for prompt, s in zip(prompts, sampling):
            script = self._script_for(prompt)
            text = script.pop(0) if script else "I give up."
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            stop = next((x for x in s.stop if x in text), None)
            if stop is not None:  # stop after the token that completes the stop string, keep it in the output
                ids = next(ids[:k] for k in range(1, len(ids) + 1) if stop in self.tokenizer.decode(ids[:k]))
            else:
                ids = ids + [self.eos_token_id]
            finish = "stop"
            if len(ids) > s.max_tokens:
                ids, finish, stop = ids[:s.max_tokens], "length", None
            outs.append(Generation(ids, [-0.5] * len(ids), finish, stop))
        return outs

    def _script_for(self, prompt: list[int]) -> list[str]:
        for i, start in enumerate(self._starts):
            if prompt[:len(start)] == start:
                return self._scripts[i]
        self._starts.append(list(prompt))
        return self._scripts[len(self._starts) - 1]


def synthetic_episodes(tokenizer, tasks: Sequence[Task], *, kinds: Sequence[str] = DEFAULT_KINDS,
                       seed: int = 0) -> list[Trajectory]:
    """Per task, the expert (sample 0) and one corruption (sample 1, kinds in turn from a seeded shuffle), played by
    the runner and scored by the reward actor. The kind played is in each trajectory's ``task_extra["episode"]``."""
    rng = random.Random(f"synthetic-episodes:{seed}")
    order = [kinds[i % len(kinds)] for i in range(len(tasks))]
    rng.shuffle(order)
    expert_tasks, bad_tasks, bad_scripts = [], [], []
    for task, kind in zip(tasks, order):
        kind_played, script = corrupted_script(task, kind, rng.randrange(1000))
        expert_tasks.append(replace(task, extra={**task.extra, "episode": "expert"}))
        bad_tasks.append(replace(task, extra={**task.extra, "episode": kind_played}))
        bad_scripts.append(script)
    cfg = RolloutConfig()
    played = []
    for sample, (group, scripts) in enumerate([(expert_tasks, [expert_script(t) for t in tasks]),
                                               (bad_tasks, bad_scripts)]):
        specs = [EpisodeSpec(t, sample_index=sample, group_id=t.task_id) for t in group]
        played += run_episodes(ScriptedPolicy(tokenizer, scripts), tokenizer, specs, cfg, version=0)
    return RewardActor(RewardConfig()).score_batch(played, {t.task_id: t for t in tasks})


def synthetic_preferences(tokenizer, n_tasks: int, *, seed: int, split: str = "train",
                          kinds: Sequence[str] = DEFAULT_KINDS,
                          length_tolerance: int | None = None) -> tuple[list[Preference], PreferenceStats]:
    """Preference pairs (``rewards.preferences.build_preferences``) from the synthetic episodes of ``n_tasks``
    calculator tasks of ``split`` drawn with ``seed``; different seeds or splits give disjoint held-out tasks."""
    episodes = synthetic_episodes(tokenizer, generate_tasks(n_tasks, seed, split), kinds=kinds, seed=seed)
    return build_preferences(episodes, length_tolerance=length_tolerance)
