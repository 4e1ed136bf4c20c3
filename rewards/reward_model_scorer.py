"""A trained Bradley–Terry reward model as a scorer ``score(trajectory, task) -> float``.

The model reads the whole episode as the policy saw it (``envs.chat.render`` of its messages, the text it was
trained on: ``rewards.preferences``) and returns its scalar reward; the task is not used (the question is in the
episode). A Bradley–Terry reward is only meaningful relative to others of the same prompt: its level and scale are
arbitrary, which group baselines (GRPO, RLOO) do not mind, but a weight next to the verifier's 0/1 outcome should
be set against the reward's spread on real episodes (``RewardModelScorer.score_batch`` on a step's trajectories).

``reward_model(trajectory, task, *, path)`` is the ``SCORERS`` entry: it loads the model at ``path`` once per
process (the reward actor is long-lived) and scores one episode per call; ``RewardModelScorer.score_batch`` scores
many in batches, several times faster on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from actors.trajectory import Trajectory
from envs.tasks import Task
from rewards.preferences import split_episode

__all__ = ["RewardModelScorer", "episode_text", "reward_model", "load_scorer"]


def episode_text(trajectory: Trajectory) -> str:
    """The episode as the reward model reads it: the prompt and completion of ``rewards.preferences``, joined.

    >>> from rewards._examples import example_trajectory
    >>> episode_text(example_trajectory(final_answer="17 * 23 = 391."))[-47:]
    '<|im_start|>assistant\\n17 * 23 = 391.<|im_end|>\\n'
    """
    prompt, completion = split_episode(trajectory.messages)
    return prompt + completion


class RewardModelScorer:
    """``RewardModelScorer(path)(trajectory, task) -> float``: the reward model saved at ``path`` (the model/
    directory of ``python -m jobs.train_reward_model``), frozen, on ``device``."""

    def __init__(self, path: str | Path, *, device: str = "cpu", batch_size: int = 16):
        from learners.reward_model import RewardModel

        self.path, self.batch_size = str(path), batch_size
        self.model = RewardModel.load(path, device)

    def __call__(self, trajectory: Trajectory, task: Task | None = None) -> float:
        return self.model.score([episode_text(trajectory)])[0]

    def score_batch(self, trajectories: Sequence[Trajectory]) -> list[float]:
        return self.model.score([episode_text(t) for t in trajectories], batch_size=self.batch_size)


@lru_cache(maxsize=2)
def load_scorer(path: str) -> RewardModelScorer:
    """One loaded model per path and process (a reward actor scores every step with the same model)."""
    return RewardModelScorer(path)


def reward_model(trajectory: Trajectory, task: Task, *, path: str | None = None) -> float:
    """The ``SCORERS`` entry: the reward model at ``path`` (``RewardConfig.reward_model_path``)."""
    if not path:
        raise ValueError("the reward_model scorer has no model. Fix: set reward.reward_model_path to the model/ "
                         "directory written by python -m jobs.train_reward_model")
    return load_scorer(str(path))(trajectory, task)
