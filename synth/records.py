"""Records that flow through synth: problems in, traces out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def fingerprint(problem_id: str, problem: str, answer: str | None) -> str:
    """What a finished row must still match on resume: the problem's id, text and gold answer."""
    return hashlib.sha256(json.dumps([problem_id, problem, answer]).encode()).hexdigest()[:16]


@dataclass
class Problem:
    """One problem of a pool.

    `metadata` is JSON-serialisable. Problems from reasoning-gym carry
    `metadata["reasoning_gym"] = {"dataset": name, "entry": entry}` so that the task's own
    scorer can verify answers later, even after a round trip through parquet.
    """

    id: str
    problem: str
    answer: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    difficulty: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return fingerprint(self.id, self.problem, self.answer)


@dataclass
class Trace:
    """One completion for one problem, with what we know about it."""

    problem_id: str
    completion: str
    steps: list[str]
    answer: str | None = None  # extracted final answer
    verified: bool | None = None  # None: no gold answer to check against
    num_tokens: int = 0
    finished: bool = True  # False when cut by max_tokens / max depth
    step_scores: list[float] | None = None  # PRM score per step
    score: float | None = None  # aggregated PRM score
    tree: dict[str, Any] | None = None  # beam/DVTS bookkeeping: node ids, parents, pruned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
