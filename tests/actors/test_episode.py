"""The episode runner's control flow, driven by a scripted engine.

The scripted engine replays chosen completions (real tokenizer, made-up logprobs) so that each branch — tool
call, malformed call, unknown tool, hung tool, turn and token limits — happens on demand; sampling these from a
135M model is not reliable. The real vLLM engine runs the same runner in test_rollout_worker.py.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from actors.config import RolloutConfig
from actors.episode import EpisodeSpec, Generation, run_episodes
from actors.trajectory import check_invariants, check_rendering
from envs import ENVS
from envs.base import Tool
from envs.calculator import CalculatorEnv, generate_tasks

pytestmark = pytest.mark.timeout(60)
CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "%s"}}\n</tool_call>'


class ScriptedBackend:
    """Returns the next scripted text per episode; a tool-call text stops at </tool_call> like vLLM's stop string."""

    def __init__(self, tokenizer, scripts: list[list[str]], eos_at_end: bool = True):
        self.tokenizer, self.scripts, self.eos_at_end = tokenizer, [list(s) for s in scripts], eos_at_end
        self.eos_token_id = tokenizer.eos_token_id
        self.calls = 0
        self.starts: list[list[int]] = []  # each episode's first prompt; later prompts extend it

    def generate(self, prompts, sampling, versions):
        self.calls += 1
        outs = []
        for prompt, s in zip(prompts, sampling):
            script = self._script_for(prompt)
            text = script.pop(0) if script else "I give up."
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            stop = None
            if s.stop[0] in text:  # like vLLM: stop after the token that completes the stop string, keep it whole
                ids = next(ids[:k] for k in range(1, len(ids) + 1) if s.stop[0] in self.tokenizer.decode(ids[:k]))
                stop = s.stop[0]
            elif self.eos_at_end:
                ids = ids + [self.eos_token_id]
            finish = "stop"
            if len(ids) > s.max_tokens:
                ids, finish, stop = ids[: s.max_tokens], "length", None
            outs.append(Generation(ids, [-0.5] * len(ids), finish, stop))
        return outs

    def _script_for(self, prompt):
        for i, start in enumerate(self.starts):
            if prompt[: len(start)] == start:
                return self.scripts[i]
        self.starts.append(list(prompt))
        return self.scripts[len(self.starts) - 1]


def _run(tokenizer, scripts, cfg=None, **kw):
    tasks = generate_tasks(len(scripts), seed=3)
    cfg = cfg or RolloutConfig(max_turns=4, max_tokens_per_turn=64, max_total_tokens=1024)
    backend = ScriptedBackend(tokenizer, scripts, **kw)
    return tasks, backend, run_episodes(backend, tokenizer, [EpisodeSpec(t) for t in tasks], cfg, version=7)


def _sound(traj, tokenizer):
    assert check_invariants(traj) == []
    assert check_rendering(traj, tokenizer) == []


def test_tool_call_then_answer(tokenizer):
    tasks, backend, (traj,) = _run(tokenizer, [[CALL % "17*23", "17 * 23 = 391."]])
    _sound(traj, tokenizer)
    roles = [m["role"] for m in traj.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert traj.messages[3]["content"] == "391"
    assert [c.name for c in traj.tool_calls] == ["calculator"] and traj.tool_calls[0].ok
    assert len(traj.turns) == 2 and all(t.policy_version == 7 for t in traj.turns)
    assert traj.status == "finished" and traj.final_answer == "17 * 23 = 391."
    # the tool result and the runner's headers are in the completion but never in the loss
    tool_text = tokenizer.decode([i for i, m in zip(traj.completion_ids, traj.loss_mask) if m == 0])
    assert "<tool_response>\n391\n</tool_response>" in tool_text
    assert "391" not in tokenizer.decode([i for i, m in zip(traj.completion_ids, traj.loss_mask) if m == 1][:40])


def test_the_runner_writes_the_closing_angle_bracket(tokenizer):
    """The turn stops at '</tool_call'; its '>' is the runner's (mask 0), so '>' vs '>"' is never the policy's."""
    tasks, backend, (traj,) = _run(tokenizer, [[CALL % "17*23" + '"', "391"]])
    first = traj.turns[0]
    assert tokenizer.decode(traj.completion_ids[first.end - 1]) == "call"
    assert tokenizer.decode(traj.completion_ids[first.end]) == ">" and traj.loss_mask[first.end] == 0
    assert traj.messages[2]["content"].endswith("</tool_call>")
    assert traj.tool_calls[0].ok and traj.tool_calls[0].strict
    _sound(traj, tokenizer)


def test_text_past_the_closing_tag_is_an_overshoot():
    from actors.episode import _overshoots

    assert _overshoots('<tool_call>{}</tool_call>"') and _overshoots("<tool_call>{}</tool_call>.")
    assert not _overshoots("<tool_call>{}</tool_call>") and not _overshoots("<tool_call>{}</tool_call>\n")


def test_batch_is_one_generate_call_per_turn(tokenizer):
    scripts = [[CALL % "1+1", "2."], ["3."], [CALL % "2*3", CALL % "6*7", "42."]]
    _, backend, trajs = _run(tokenizer, scripts)
    assert backend.calls == 3  # the longest episode has 3 turns; all episodes share each engine call
    assert [len(t.turns) for t in trajs] == [2, 1, 3]
    for t in trajs:
        _sound(t, tokenizer)


def test_malformed_and_unknown_calls_become_observations(tokenizer):
    bad_json = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}\n</tool_call>'
    unknown = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    _, _, (traj,) = _run(tokenizer, [[bad_json, unknown, CALL % "1+1", "2."]])
    _sound(traj, tokenizer)
    tool_msgs = [m["content"] for m in traj.messages if m["role"] == "tool"]
    assert tool_msgs[0].startswith("error:") and "unknown tool 'weather'" in tool_msgs[1] and tool_msgs[2] == "2"
    assert traj.parse_errors == 1
    assert [c.ok for c in traj.tool_calls] == [False, False, True]
    assert traj.status == "finished"


def test_turn_limit_truncates(tokenizer):
    cfg = RolloutConfig(max_turns=2, max_tokens_per_turn=64, max_total_tokens=1024)
    _, _, (traj,) = _run(tokenizer, [[CALL % "1+1", CALL % "2+2", "4."]], cfg=cfg)
    _sound(traj, tokenizer)
    assert traj.status == "truncated" and len(traj.turns) == 2 and traj.final_answer is None


def test_length_cut_truncates_and_closes_turn(tokenizer):
    cfg = RolloutConfig(max_turns=4, max_tokens_per_turn=8, max_total_tokens=1024)
    _, _, (traj,) = _run(tokenizer, [["This answer goes on and on for many more tokens than allowed here."]],
                         cfg=cfg)
    _sound(traj, tokenizer)
    assert traj.status == "truncated" and traj.num_sampled == 8
    assert tokenizer.decode(traj.completion_ids[-2:]) == "<|im_end|>\n"  # closed by the runner, mask 0
    assert traj.loss_mask[-2:] == [0, 0]


def test_total_token_budget(tokenizer):
    _, _, (probe,) = _run(tokenizer, [["ok."]])
    prompt_len = len(probe.prompt_ids)
    cfg = RolloutConfig(max_turns=4, max_tokens_per_turn=64, max_total_tokens=prompt_len + 40)
    _, _, (traj,) = _run(tokenizer, [[CALL % "1+1", CALL % "2+2", "4."]], cfg=cfg)
    _sound(traj, tokenizer)
    assert traj.status == "truncated" and traj.num_tokens <= prompt_len + 40 + 64


def test_prompt_over_budget_is_skipped_not_crashed(tokenizer):
    cfg = RolloutConfig(max_turns=4, max_tokens_per_turn=8, max_total_tokens=50)
    _, backend, (traj,) = _run(tokenizer, [["2."]], cfg=cfg)
    assert traj.status == "error" and "over max_total_tokens" in traj.error
    assert traj.completion_ids == [] and backend.calls == 0


def test_hung_tool_times_out(tokenizer, monkeypatch):
    release = threading.Event()

    class SlowCalc(CalculatorEnv):
        def reset(self, task):
            messages, tools = super().reset(task)
            slow = Tool("calculator", "slow", tools[0].parameters, lambda expression: release.wait(30) and "0")
            self._tools = {"calculator": slow}
            return messages, [slow]

    monkeypatch.setitem(ENVS, "calculator", SlowCalc)
    cfg = RolloutConfig(max_turns=3, max_tokens_per_turn=64, max_total_tokens=1024, tool_timeout_s=0.3)
    try:
        _, _, (traj,) = _run(tokenizer, [[CALL % "1+1", "2."]], cfg=cfg)
    finally:
        release.set()
    _sound(traj, tokenizer)
    assert "timed out after 0.3s" in traj.messages[3]["content"]
    assert traj.tool_calls[0].error == "timeout" and traj.status == "finished"


def test_sampling_seed_is_per_episode_and_turn(tokenizer):
    seen = []

    class Recorder(ScriptedBackend):
        def generate(self, prompts, sampling, versions):
            seen.extend(s.seed for s in sampling)
            return super().generate(prompts, sampling, versions)

    tasks = generate_tasks(2, seed=3)
    cfg = RolloutConfig(samples_per_task=1)
    specs = [EpisodeSpec(tasks[0], 0), EpisodeSpec(tasks[0], 1), EpisodeSpec(tasks[1], 0)]
    run_episodes(Recorder(tokenizer, [["a."], ["b."], ["c."]]), tokenizer, specs, cfg, version=0)
    first = list(seen)
    seen.clear()
    run_episodes(Recorder(tokenizer, [["a."], ["b."], ["c."]]), tokenizer, specs, replace(cfg, seed=1), version=0)
    assert len(set(first)) == 3 and first != seen
