"""The PRM protocol: one score per reasoning step, and how step scores become one score."""

from __future__ import annotations

import math
from typing import Literal, Protocol

Aggregation = Literal["last", "min", "prod", "mean"]


class PRM(Protocol):
    """A process reward model: P(the solution is still on track) after each step."""

    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        """For each (problem, steps) pair, one score in [0, 1] per step (batched inside)."""
        ...


def aggregate(step_scores: list[float], how: Aggregation = "last") -> float:
    """Collapse per-step scores into one (the blog found `last` best for best-of-N)."""
    if not step_scores:
        return 0.0
    if how == "last":
        return step_scores[-1]
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    if how == "mean":
        return sum(step_scores) / len(step_scores)
    raise ValueError(f"unknown aggregation {how!r}: use last, min, prod or mean")
