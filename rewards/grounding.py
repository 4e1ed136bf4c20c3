"""Grounding: did the episode actually retrieve the page its answer comes from?

The search env's verifier (``envs.search_env.verify``) sees only the final answer's text, so a right answer the model
remembered, or guessed, scores the same as one it looked up. ``grounded`` is the other half: 1.0 when a ``search``
or ``open`` call that ran returned the gold page (``meta.doc_id`` of the task), which both tools show as ``[doc_id]``
at the start of a line (a search result's header, an opened page's first line); 0.0 otherwise. Tasks without a gold
page (every other env) score 0.0, a constant that moves no advantage within a group.

It rewards retrieval, not the answer: keep its weight small (0.2). With the default weights format and tool_use
move the total by up to 0.6, so 0.6 + 0.2 < 1.0, the outcome weight: retrieving the right page and answering wrong
never beats answering right, however the rest of the episode went.
"""

from __future__ import annotations

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.tool_shaping import tool_results

__all__ = ["grounded", "RETRIEVAL_TOOLS"]

RETRIEVAL_TOOLS = ("search", "open")  # tools whose results show page ids in brackets (envs.search_env)


def grounded(trajectory: Trajectory, task: Task) -> float:
    """1.0 when a search/open call that ran (``ok``) returned a line starting ``[<meta.doc_id>]``; else 0.0.

    >>> from actors.trajectory import ToolCallRecord
    >>> from rewards._examples import example_trajectory
    >>> task = Task("t", "search", "What is the default kl_coef?", '[["0.02"]]', '{"doc_id": "grpo"}')
    >>> def call(result, name="search", ok=True):
    ...     return ToolCallRecord(0, name, '{"query": "kl_coef"}', ok), result
    >>> found = call("[kl-penalty] The KL penalty (passage 1 of 3)\\n...\\n\\n[grpo] GRPO (passage 2 of 3)\\n...")
    >>> grounded(example_trajectory(calls=[found], final_answer="0.02"), task)  # the gold page among the results
    1.0
    >>> grounded(example_trajectory(calls=[call("[kl-penalty] The KL penalty ... see [grpo]")], final_answer="0.02"),
    ...          task)  # not a result of the gold page: only a mention
    0.0
    >>> grounded(example_trajectory(calls=[call("error: unknown doc_id '[grpo]x'", name="open", ok=False)],
    ...                             final_answer="0.02"), task)
    0.0
    >>> grounded(example_trajectory(calls=[], final_answer="0.02"), task)  # remembered, not retrieved
    0.0
    """
    doc_id = task.meta_value().get("doc_id")
    if not isinstance(doc_id, str) or not doc_id:
        return 0.0
    marker = f"[{doc_id}]"
    for record, result in zip(trajectory.tool_calls, tool_results(trajectory), strict=True):
        if record.ok and record.name in RETRIEVAL_TOOLS and (result.startswith(marker) or f"\n{marker}" in result):
            return 1.0
    return 0.0
