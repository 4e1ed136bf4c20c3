"""The trajectory: one episode as token ids, loss mask, behavior logprobs, turns and tool calls.

Defined once here as a dataclass and one Arrow schema; every step's batch is written to Parquet with it. The
token ids are the truth: ``prompt_ids + completion_ids`` is exactly what the policy saw, and ``messages`` is the
same episode as a message list whose rendering by ``envs.chat.render`` decodes to those ids.

Invariants (``check_invariants``): ``len(loss_mask) == len(completion_ids)``; ``sum(loss_mask) ==
len(behavior_logprobs)``; mask 1 exactly on the sampled spans of the turns (the prompt, tool results and the
runner's own turn tokens are never in the loss); turn spans ordered and disjoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("finished", "truncated", "error")


@dataclass
class Turn:
    """One assistant turn: its sampled tokens are ``completion_ids[start:end]``."""

    start: int
    end: int
    agent_id: str = "agent"
    policy_version: int = 0
    reward: float = 0.0  # process reward of this turn; learners assign it to the turn's tokens


@dataclass
class ToolCallRecord:
    turn: int  # index into Trajectory.turns
    name: str
    arguments: str  # JSON text as parsed (or the raw text when it did not parse)
    ok: bool
    error: str | None = None
    latency_s: float = 0.0
    strict: bool = True  # False: the call needed a tolerant repair (single quotes, a number for a string, ...)


@dataclass
class Trajectory:
    task_id: str
    env: str
    group_id: str  # episodes of one task sampled together (GRPO/RLOO groups)
    sample_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    behavior_logprobs: list[float]  # one per mask-1 token, in order; processed (after temperature)
    messages: list[dict]
    turns: list[Turn] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    final_answer: str | None = None
    status: str = "finished"
    reward: float = 0.0
    reward_breakdown: dict[str, float] = field(default_factory=dict)
    policy_version: int = 0  # version that sampled the first turn; per-turn versions are in turns
    parse_errors: int = 0
    error: str | None = None  # why status is "error" (e.g. the prompt did not fit the context)
    timings: dict[str, float] = field(default_factory=dict)
    task_extra: str = "{}"  # JSON: the task's meta and pass-through columns

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def num_sampled(self) -> int:
        return len(self.behavior_logprobs)


_TURN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("agent_id", pa.string()),
                   ("policy_version", pa.int64()), ("reward", pa.float32())])
_CALL = pa.struct([("turn", pa.int32()), ("name", pa.string()), ("arguments", pa.string()), ("ok", pa.bool_()),
                   ("error", pa.string()), ("latency_s", pa.float32()), ("strict", pa.bool_())])

TRAJECTORY_SCHEMA = pa.schema([
    ("task_id", pa.string()), ("env", pa.string()), ("group_id", pa.string()), ("sample_index", pa.int32()),
    ("prompt_ids", pa.list_(pa.int32())), ("completion_ids", pa.list_(pa.int32())),
    ("loss_mask", pa.list_(pa.int8())), ("behavior_logprobs", pa.list_(pa.float32())),
    ("messages", pa.string()),  # JSON list: message dicts are heterogeneous (system messages carry tools)
    ("turns", pa.list_(_TURN)), ("tool_calls", pa.list_(_CALL)),
    ("final_answer", pa.string()), ("status", pa.string()), ("reward", pa.float32()),
    ("reward_breakdown", pa.map_(pa.string(), pa.float32())), ("policy_version", pa.int64()),
    ("parse_errors", pa.int32()), ("error", pa.string()),
    ("timings", pa.map_(pa.string(), pa.float32())), ("task_extra", pa.string()),
])


def to_table(trajectories: Sequence[Trajectory]) -> pa.Table:
    rows = []
    for t in trajectories:
        row = asdict(t)
        row["messages"] = json.dumps(t.messages, ensure_ascii=False)
        row["reward_breakdown"] = list(t.reward_breakdown.items())
        row["timings"] = list(t.timings.items())
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)


def from_table(table: pa.Table) -> list[Trajectory]:
    out = []
    for row in table.to_pylist():
        row["messages"] = json.loads(row["messages"])
        row["turns"] = [Turn(**x) for x in row["turns"]]
        row["tool_calls"] = [ToolCallRecord(**x) for x in row["tool_calls"]]
        row["reward_breakdown"] = dict(row["reward_breakdown"] or [])
        row["timings"] = dict(row["timings"] or [])
        out.append(Trajectory(**row))
    return out


def write_parquet(trajectories: Sequence[Trajectory], path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a killed writer never leaves a half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(to_table(trajectories), tmp)
    tmp.replace(path)
    return path


def read_parquet(path: str | Path) -> list[Trajectory]:
    return from_table(pq.read_table(path))


def check_invariants(t: Trajectory) -> list[str]:
    """Structural invariants; returns the problems found (empty when the trajectory is sound)."""
    problems = []
    if len(t.loss_mask) != len(t.completion_ids):
        problems.append(f"len(loss_mask)={len(t.loss_mask)} != len(completion_ids)={len(t.completion_ids)}")
    if sum(t.loss_mask) != len(t.behavior_logprobs):
        problems.append(f"sum(loss_mask)={sum(t.loss_mask)} != len(behavior_logprobs)={len(t.behavior_logprobs)}")
    if t.status not in STATUSES:
        problems.append(f"status {t.status!r} not in {STATUSES}")
    expected = [0] * len(t.completion_ids)
    last_end = 0
    for i, turn in enumerate(t.turns):
        if not (last_end <= turn.start <= turn.end <= len(t.completion_ids)):
            problems.append(f"turn {i} span [{turn.start}, {turn.end}) out of order or out of range")
            continue
        expected[turn.start:turn.end] = [1] * (turn.end - turn.start)
        last_end = turn.end
        if turn.policy_version < 0:
            problems.append(f"turn {i} has no policy version")
    if not problems and expected != list(t.loss_mask):
        problems.append("loss_mask is not 1 exactly on the sampled turn spans")
    if any(lp > 0 for lp in t.behavior_logprobs):
        problems.append("a behavior logprob is > 0")
    return problems


def check_rendering(t: Trajectory, tokenizer) -> list[str]:
    """The chat contract: ids decode to the template's rendering of ``messages``, and every token the runner
    added (mask 0: prompt, end of turn, tool results, headers) is the tokenizer's own encoding of that stretch of
    the rendering. Sampled tokens are the model's choice and may split text non-canonically; they are checked
    through the decode only.
    """
    from envs.chat import decode, render

    ids = t.prompt_ids + t.completion_ids
    text = render(t.messages)
    problems = []
    if decode(tokenizer, ids) != text:
        problems.append("decode(prompt_ids + completion_ids) != render(messages)")
        return problems
    mask = [0] * len(t.prompt_ids) + list(t.loss_mask)
    start = 0
    while start < len(ids):
        end = start
        while end < len(ids) and mask[end] == mask[start]:
            end += 1
        if mask[start] == 0:
            lo, hi = len(decode(tokenizer, ids[:start])), len(decode(tokenizer, ids[:end]))
            if tokenizer.encode(text[lo:hi], add_special_tokens=False) != ids[start:end]:
                problems.append(f"runner tokens [{start}, {end}) are not the template's tokenization of "
                                f"{text[lo:hi]!r}")
        start = end
    return problems
