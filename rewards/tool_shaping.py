"""Tool-use shaping: a failed call < a call that runs but is wrong < a correct call (the product card's ordering).

Each tool call is classified from its record and its result (the ``tool`` message the runner appended for it):

- ``failed``: ``ok`` is False: unreadable, unknown tool, bad arguments, the tool raised or timed out;
- ``wrong``: it ran (``ok`` True) but its result does not answer the task;
- ``correct``: it ran and its result answers the task, judged by the env's own verifier (``rewards.verifiers``) as
  if the result were the final answer. For the calculator that is ``extract_number(result)`` equal to the task's
  answer (relative tolerance 1e-6).

The episode is scored by its **last** call, not its best: with "best", spamming calls until one lands is free,
while "last" rewards where the model ended up, so recovering from a failed call earns the full value. An episode
with no call scores ``none``.

Why these magnitudes (defaults, set in ``RewardConfig``): failed -0.2, none 0.0, wrong 0.1, correct 0.3.

- The ordering holds in the *total* with the default weights, whatever the format grade: each step (0.3, then
  0.2) is larger than the whole format term (weight 0.1 x at most 1.0), so format cannot reorder them.
- Shaping stays below the outcome: its full span (0.3 - (-0.2)) plus the format term is 0.6 < 1.0, so a right
  answer always beats a wrong one, whatever the tools did, and shaping cannot be farmed into more than a correct
  answer is worth.
- A correct call is worth more than a lucky guess without a tool (1.3 vs 1.0 before format): the untrained model
  guesses (17*23 = 381), and a guess that happens to be right should not teach it to skip the calculator.
- A failed call costs less than nothing (-0.2 < 0): emitting broken calls is never cheaper than answering, so the
  policy cannot farm "trying"; a call that runs but is wrong earns a little (0.1 > 0) because running the tool at
  all is the first skill the policy has to learn (DESIGN.md: 1 valid call in 64 samples untrained).
"""

from __future__ import annotations

from actors.trajectory import ToolCallRecord, Trajectory
from envs.tasks import Task
from rewards.verifiers import verifier_for

__all__ = ["tool_use", "classify_calls", "tool_results", "call_turn", "NONE", "FAILED", "WRONG", "CORRECT"]

NONE, FAILED, WRONG, CORRECT = 0.0, -0.2, 0.1, 0.3


def call_turn(record: ToolCallRecord, trajectory: Trajectory) -> int:
    """The index into ``trajectory.turns`` of the turn that made ``record``; ValueError when it points outside the
    episode (a per-turn scorer would otherwise credit the wrong turn or fail with an IndexError)."""
    if not 0 <= record.turn < len(trajectory.turns):
        raise ValueError(f"tool call record points at turn {record.turn}, the episode has {len(trajectory.turns)}")
    return record.turn


def tool_results(trajectory: Trajectory) -> list[str]:
    """The result each tool call returned, in call order: the runner appends exactly one ``tool`` message per call
    record, so the k-th tool message is the k-th record's result. ValueError when the counts disagree: pairing
    them anyway could credit one call with another's result.
    """
    results = [m.get("content") for m in trajectory.messages if isinstance(m, dict) and m.get("role") == "tool"]
    if len(results) != len(trajectory.tool_calls):
        raise ValueError(f"{len(trajectory.tool_calls)} tool call records but {len(results)} tool messages; "
                         "cannot pair calls with their results")
    return [r if isinstance(r, str) else "" for r in results]


def classify_calls(trajectory: Trajectory, task: Task) -> list[str]:
    """``"failed"``, ``"wrong"`` or ``"correct"`` for each tool call, in order (see the module doc).

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> calls = [tool_call("error: division by zero", ok=False), tool_call("381"), tool_call("391")]
    >>> classify_calls(example_trajectory(calls=calls, final_answer="391"), example_task(answer=391))
    ['failed', 'wrong', 'correct']
    """
    verify = verifier_for(task.env)
    return [_classify(record.ok, result, task, verify) for record, result in
            zip(trajectory.tool_calls, tool_results(trajectory), strict=True)]


def _classify(ok: bool, result: str, task: Task, verify) -> str:
    if not ok:
        return "failed"
    return "correct" if verify(task, result) else "wrong"


def tool_use(trajectory: Trajectory, task: Task, *, none: float = NONE, failed: float = FAILED, wrong: float = WRONG,
             correct: float = CORRECT) -> float:
    """The value of the episode's last tool call's class; ``none`` when it made no call.

    >>> from rewards._examples import example_task, example_trajectory, tool_call
    >>> task = example_task(answer=391)
    >>> [tool_use(example_trajectory(calls=c, final_answer="391"), task)
    ...  for c in ([], [tool_call("error: bad", ok=False)], [tool_call("381")], [tool_call("391")])]
    [0.0, -0.2, 0.1, 0.3]
    >>> tool_use(example_trajectory(calls=[tool_call("error: bad", ok=False), tool_call("391")], final_answer=None,
    ...                             status="truncated"), task)  # the last call counts: the model recovered
    0.3
    """
    if not trajectory.tool_calls:
        return none
    values = {"failed": failed, "wrong": wrong, "correct": correct}
    last = trajectory.tool_calls[-1]
    return values[_classify(last.ok, tool_results(trajectory)[-1], task, verifier_for(task.env))]
