"""Readable transcripts of episodes: the conversation as a reader wants it, one section per episode.

System prompts are shortened to their first line (they repeat in every episode and carry the tool schemas); a
hand-off's second system prompt is kept whole, because which agent took over is the point of the transcript.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.trajectory import Trajectory

__all__ = ["format_transcripts"]


def format_transcripts(trajectories: Sequence[Trajectory], limit: int = 8) -> str:
    """Markdown for the first ``limit`` episodes: task, status, reward and its breakdown, then each message.

    >>> from rewards._examples import example_trajectory, tool_call
    >>> text = format_transcripts([example_trajectory(calls=[tool_call("391")], final_answer="391")])
    >>> "## t0 (calculator): finished, reward" in text and "**tool**: 391" in text
    True
    """
    sections = []
    for t in trajectories[:limit]:
        parts = [f"## {t.task_id} ({t.env}): {t.status}, reward {t.reward:.3f}"]
        if t.reward_breakdown:
            parts.append(", ".join(f"{k} {v:.3f}" for k, v in sorted(t.reward_breakdown.items())))
        if t.error:
            parts.append(f"error: {t.error}")
        seen_system = False
        for m in t.messages:
            role, content = m.get("role", "?"), str(m.get("content") or "")
            if role == "system" and not seen_system:
                content, seen_system = content.splitlines()[0] if content else "", True
            parts.append(f"**{role}**: {content}")
        sections.append("\n\n".join(parts))
    more = len(trajectories) - limit
    tail = [f"... and {more} more episodes in trajectories/rollout.parquet"] if more > 0 else []
    return "\n\n---\n\n".join(sections + tail) + "\n"
