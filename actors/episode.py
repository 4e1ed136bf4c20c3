"""The episode runner: plays many multi-turn tool episodes at once against one generation backend.

Every turn, all live episodes go to the engine in one ``generate`` call (vLLM batches them), then their tool
calls run concurrently in threads, then the next turn. Token ids are the truth (DESIGN.md): sampled ids are kept
as sampled, with their behavior logprobs and mask 1; everything the runner adds (end of turn, tool results,
hand-off prompts, the next turn header) is the template's rendering of the grown message list, tokenized as a
suffix only, with mask 0. Earlier turns are never re-tokenized.

This module is the same code the rollout job, the training job and eval call.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from actors.config import RolloutConfig
from actors.trajectory import ToolCallRecord, Trajectory, Turn
from envs import make_env
from envs.base import StepResult
from envs.chat import TOOL_CALL_CLOSE, TOOL_CALL_STOP, decode, render, suffix_ids
from envs.tasks import Task
from envs.tool_calls import ToolCall, parse_tool_calls

MAX_CALLS_PER_TURN = 4  # more is almost always a degenerate loop; the rest get an error observation


@dataclass(frozen=True)
class Sampling:
    """What one request asks of the engine."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = (TOOL_CALL_STOP,)


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # of each sampled token, after temperature
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    stop_str: str | None = None  # the stop string that ended it, None for EOS / length


class Backend(Protocol):
    """A generation engine: vLLM in the rollout worker; anything with this method in tests or benches."""

    eos_token_id: int

    def generate(self, prompts: Sequence[list[int]], sampling: Sequence[Sampling],
                 versions: Sequence[int]) -> list[Generation]: ...


@dataclass(frozen=True)
class EpisodeSpec:
    task: Task
    sample_index: int = 0
    group_id: str = ""


@dataclass
class _Episode:
    spec: EpisodeSpec
    env: object
    tools: dict
    messages: list[dict]
    prompt_ids: list[int]
    version: int
    completion_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    calls: list[ToolCallRecord] = field(default_factory=list)
    agent_id: str = "agent"
    status: str = "running"
    error: str | None = None
    final_answer: str | None = None
    reward: float = 0.0
    parse_errors: int = 0
    generate_s: float = 0.0
    tool_s: float = 0.0

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids


def episode_seed(base: int, task_id: str, sample_index: int, turn: int) -> int:
    """A stable per-request seed, so one worker in sync mode replays episodes token for token."""
    return zlib.crc32(f"{base}/{task_id}/{sample_index}/{turn}".encode()) & 0x7FFFFFFF


def run_episodes(backend: Backend, tokenizer, specs: Sequence[EpisodeSpec], cfg: RolloutConfig, *,
                 version: int, pool: ThreadPoolExecutor | None = None) -> list[Trajectory]:
    """Play every spec to the end (final answer, error, or a turn/token limit) and return their trajectories."""
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=16, thread_name_prefix="tools")
    try:
        episodes = [_start(spec, tokenizer, cfg, version) for spec in specs]
        while live := [e for e in episodes if e.status == "running"]:
            _play_turn(backend, tokenizer, live, cfg, pool)
        return [_finish(e, tokenizer) for e in episodes]
    finally:
        if own_pool:
            pool.shutdown(wait=False)


def _start(spec: EpisodeSpec, tokenizer, cfg: RolloutConfig, version: int) -> _Episode:
    env = make_env(spec.task.env)
    messages, tools = env.reset(spec.task)
    messages = [dict(m) for m in messages]
    system = next(m for m in messages if m["role"] == "system")
    system["tools"] = [t.schema() for t in tools]
    prompt_ids = tokenizer.encode(render(messages, add_generation_prompt=True), add_special_tokens=False)
    ep = _Episode(spec, env, {t.name: t for t in tools}, messages, prompt_ids, version,
                  agent_id=getattr(env, "agent_id", "agent"))  # multi-agent envs say who starts (support_desk)
    if len(prompt_ids) >= min(cfg.max_total_tokens, cfg.max_model_len):
        ep.status, ep.error = "error", (f"prompt has {len(prompt_ids)} tokens, over max_total_tokens="
                                        f"{cfg.max_total_tokens}; skipped")
    return ep


def _play_turn(backend: Backend, tokenizer, live: list[_Episode], cfg: RolloutConfig,
               pool: ThreadPoolExecutor) -> None:
    sampling = [
        Sampling(max_tokens=min(cfg.max_tokens_per_turn, cfg.max_total_tokens - len(e.ids)),
                 temperature=cfg.temperature, top_p=cfg.top_p,
                 seed=episode_seed(cfg.seed, e.spec.task.task_id, e.spec.sample_index, len(e.turns)))
        for e in live
    ]
    started = time.perf_counter()
    outs = backend.generate([e.ids for e in live], sampling, [e.version for e in live])
    elapsed = time.perf_counter() - started
    pending = []
    for ep, out in zip(live, outs):
        ep.generate_s += elapsed
        calls = _absorb(ep, out, tokenizer, backend.eos_token_id)
        if ep.status == "running":
            pending.append((ep, pool.submit(_run_calls, ep, calls, cfg.tool_timeout_s)))
    for ep, fut in pending:
        fut.result()
        _after_tools(ep, tokenizer, cfg)


def _absorb(ep: _Episode, out: Generation, tokenizer, eos_id: int) -> list[ToolCall]:
    """Record the sampled turn; decide whether it ends the episode; return the tool calls to run."""
    start = len(ep.completion_ids)
    ep.completion_ids += out.token_ids
    ep.loss_mask += [1] * len(out.token_ids)
    ep.logprobs += out.logprobs
    ep.turns.append(Turn(start, len(ep.completion_ids), ep.agent_id, ep.version))
    ended_by_eos = bool(out.token_ids) and out.token_ids[-1] == eos_id and out.stop_str is None
    content = decode(tokenizer, out.token_ids[:-1] if ended_by_eos else out.token_ids)
    if out.stop_str == TOOL_CALL_STOP and content.endswith(TOOL_CALL_STOP):
        content += TOOL_CALL_CLOSE[len(TOOL_CALL_STOP):]  # the runner closes the tag: its '>' is a mask-0 token
    ep.messages.append({"role": "assistant", "content": content})
    calls, errors = parse_tool_calls(content)
    if calls and out.stop_str is not None and _overshoots(content):
        calls[-1] = replace(calls[-1], strict=False)
    ep.parse_errors += len(errors)
    turn = len(ep.turns) - 1
    for err in errors:
        ep.calls.append(ToolCallRecord(turn, "", err.raw[:2000], ok=False, error=err.message, strict=False))
        ep.messages.append({"role": "tool", "content": f"error: {err.message}"})
    if calls or errors:
        return calls
    if out.finish_reason == "length":
        ep.status = "truncated"  # cut mid-answer: no final answer to score
    else:
        result = ep.env.step(content)
        ep.final_answer, ep.reward, ep.status = content, result.reward, "finished"
    return []


def _overshoots(content: str) -> bool:
    """Did the turn's last token run past the closing tag (a token like ``call>"``)? The call still runs, but it is
    not strict. Rare since the runner writes the tag's ``>`` itself (``envs.chat.TOOL_CALL_STOP``)."""
    at = content.rfind(TOOL_CALL_CLOSE)
    return at != -1 and content[at + len(TOOL_CALL_CLOSE):].strip() != ""


def _run_calls(ep: _Episode, calls: list[ToolCall], timeout_s: float) -> None:
    turn = len(ep.turns) - 1
    started = time.perf_counter()
    for i, call in enumerate(calls):
        if i >= MAX_CALLS_PER_TURN:
            result = StepResult(f"error: at most {MAX_CALLS_PER_TURN} tool calls per turn; this one was not run",
                                0.0, False, {"ok": False, "error": "too many calls", "latency_s": 0.0})
        else:
            result = _step_with_timeout(ep.env, call, timeout_s)
        info = result.info
        ep.calls.append(ToolCallRecord(turn, call.name, json.dumps(call.arguments, ensure_ascii=False),
                                       ok=bool(info.get("ok")), error=info.get("error"),
                                       latency_s=float(info.get("latency_s", 0.0)),
                                       strict=call.strict and not info.get("coerced", False)))
        ep.messages.append({"role": "tool", "content": result.observation or ""})
        for extra in info.get("messages", []):  # hand-offs: the env adds the next agent's system prompt
            ep.messages.append(dict(extra))
        ep.agent_id = info.get("agent_id", ep.agent_id)
        if result.done:
            ep.status, ep.reward = "finished", result.reward
            break
    ep.tool_s += time.perf_counter() - started


def _step_with_timeout(env, call: ToolCall, timeout_s: float) -> StepResult:
    """Run one tool call in a daemon thread; a hung tool becomes a timeout observation, not a hung worker."""
    box: list = []

    def target():
        try:
            box.append(env.step(call))
        except Exception as exc:  # envs should not raise; if one does, the model sees it and we go on
            box.append(StepResult(f"error: {type(exc).__name__}: {exc}", 0.0, False,
                                  {"ok": False, "error": f"{type(exc).__name__}: {exc}"}))

    thread = threading.Thread(target=target, daemon=True, name=f"tool-{call.name}")
    thread.start()
    thread.join(timeout_s)
    if not box:
        return StepResult(f"error: tool {call.name!r} timed out after {timeout_s:g}s", 0.0, False,
                          {"ok": False, "error": "timeout", "latency_s": timeout_s})
    return box[0]


def _after_tools(ep: _Episode, tokenizer, cfg: RolloutConfig) -> None:
    """Append the runner's tokens (end of turn, tool results, next header) as a mask-0 suffix."""
    if ep.status == "running" and len(ep.turns) >= cfg.max_turns:
        ep.status = "truncated"
    try:
        before = decode(tokenizer, ep.ids)
        new = suffix_ids(tokenizer, before, render(ep.messages, add_generation_prompt=ep.status == "running"))
        if ep.status == "running" and len(ep.ids) + len(new) >= cfg.max_total_tokens:
            ep.status = "truncated"  # no room left for another turn: close the episode without a new header
            new = suffix_ids(tokenizer, before, render(ep.messages))
    except ValueError as err:
        ep.status, ep.error = "error", str(err)
        return
    ep.completion_ids += new
    ep.loss_mask += [0] * len(new)


def _finish(ep: _Episode, tokenizer) -> Trajectory:
    if ep.status in ("finished", "truncated") and ep.turns and ep.messages[-1]["role"] == "assistant":
        _close(ep, tokenizer)
    if ep.status == "running":
        ep.status = "truncated"
    task = ep.spec.task
    extra = {"meta": task.meta_value(), **task.extra}
    return Trajectory(
        task_id=task.task_id, env=task.env, group_id=ep.spec.group_id or task.task_id,
        sample_index=ep.spec.sample_index, prompt_ids=ep.prompt_ids, completion_ids=ep.completion_ids,
        loss_mask=ep.loss_mask, behavior_logprobs=ep.logprobs, messages=ep.messages, turns=ep.turns,
        tool_calls=ep.calls, final_answer=ep.final_answer, status=ep.status, reward=ep.reward,
        reward_breakdown={"outcome": ep.reward}, policy_version=ep.turns[0].policy_version if ep.turns else ep.version,
        parse_errors=ep.parse_errors, error=ep.error,
        timings={"generate_s": ep.generate_s, "tool_s": ep.tool_s}, task_extra=json.dumps(extra, default=str),
    )


def _close(ep: _Episode, tokenizer) -> None:
    """Close the last assistant turn as the template renders it (``<|im_end|>\\n``), mask 0."""
    try:
        new = suffix_ids(tokenizer, decode(tokenizer, ep.ids), render(ep.messages))
    except ValueError as err:
        ep.status, ep.error = "error", str(err)
        return
    ep.completion_ids += new
    ep.loss_mask += [0] * len(new)
