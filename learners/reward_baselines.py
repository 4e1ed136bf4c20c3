"""What a reward model must beat: pairwise accuracy of two baselines fit on the same training pairs.

- **Length**: longer wins, or shorter wins, whichever is right more often on the training pairs. A reward model
  that only beats 50% here may have learned length, the best-known reward hack.
- **Bag of words**: pairwise logistic regression on token counts, ``P(chosen wins) = sigmoid(w . (x_chosen -
  x_rejected))`` with an L2 penalty, no bias (a pair has no order of its own). Words are the reward model's tokens,
  so a number is a bag of its digits (SmolLM2 splits numbers into single digits). It catches any preference that
  rides on which words appear (``error``, a missing ``<tool_call>``), not on how they relate.

Accuracy counts a tie as half a pair: a tied score is a coin flip, not a win.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["pairwise_accuracy", "LengthBaseline", "BagOfWords"]


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs whose chosen text scores higher; a tie counts 0.5.

    >>> pairwise_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0])
    0.625
    """
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need equally many chosen and rejected scores, at least one; got {len(chosen)} and "
                         f"{len(rejected)}")
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


@dataclass(frozen=True)
class LengthBaseline:
    """Score = +length (longer wins) or -length (shorter wins); lengths in tokens."""

    sign: int

    @property
    def name(self) -> str:
        return "longer wins" if self.sign > 0 else "shorter wins"

    @classmethod
    def fit(cls, chosen_lengths: Sequence[int], rejected_lengths: Sequence[int]) -> LengthBaseline:
        """The direction that is right more often on the training pairs (longer on a draw).

        >>> LengthBaseline.fit([10, 12, 9], [11, 15, 9]).name
        'shorter wins'
        """
        longer = pairwise_accuracy(chosen_lengths, rejected_lengths)
        return cls(1 if longer >= 0.5 else -1)

    def score(self, lengths: Sequence[int]) -> list[float]:
        return [float(self.sign * n) for n in lengths]


class BagOfWords:
    """Pairwise logistic regression on token counts (module doc); tokens not seen in training weigh 0."""

    def __init__(self, vocab: dict[int, int], weights: torch.Tensor):
        self.vocab, self.weights = vocab, weights

    @classmethod
    def fit(cls, chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], *, l2: float = 1e-3,
            steps: int = 200) -> BagOfWords:
        """Fit ``w`` by L-BFGS on ``mean softplus(-w . (x_c - x_r)) + l2 * |w|^2`` over token-id lists.

        >>> bow = BagOfWords.fit([[1, 2], [1, 3]], [[1, 4], [1, 4]])  # 2 and 3 win, 4 loses
        >>> [round(s, 1) for s in bow.score([[2], [4], [5]])]
        [1.7, -3.3, 0.0]
        """
        vocab: dict[int, int] = {}
        for ids in (*chosen, *rejected):
            for t in ids:
                vocab.setdefault(t, len(vocab))
        diff = cls._counts(vocab, chosen) - cls._counts(vocab, rejected)
        weights = torch.zeros(len(vocab), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.softplus(-(diff @ weights)).mean() + l2 * weights.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(vocab, weights.detach())

    @staticmethod
    def _counts(vocab: dict[int, int], rows: Sequence[Sequence[int]]) -> torch.Tensor:
        x = torch.zeros((len(rows), len(vocab)), dtype=torch.float64)
        for i, ids in enumerate(rows):
            for t, n in Counter(ids).items():
                if t in vocab:
                    x[i, vocab[t]] = n
        return x

    def score(self, rows: Sequence[Sequence[int]]) -> list[float]:
        return (self._counts(self.vocab, rows) @ self.weights).tolist()
