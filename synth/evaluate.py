"""Accuracy metrics over generated rows: pass@k, maj@k (subsampled over N)."""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction


def answer_key(answer: str | None) -> str | None:
    """A canonical key so that equal answers vote together ("3.0" and "3", "1/2" and "0.5")."""
    if answer is None:
        return None
    text = re.sub(r"\s+", "", answer).strip("$.").replace(",", "").lower()
    if not text:
        return None
    try:
        return str(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return text


def majority_index(answers: list[str | None], weights: list[float] | None = None) -> int | None:
    """Index of one completion carrying the answer with the largest (weighted) vote."""
    votes: Counter = Counter()
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        key = answer_key(a)
        if key is None:
            continue
        votes[key] += 1.0 if weights is None else weights[i]
        first.setdefault(key, i)
    if not votes:
        return None
    best = max(votes, key=lambda k: (votes[k], -first[k]))  # ties: earliest answer wins
    return first[best]


def select_answers(traces) -> dict[str, int | None]:
    """Index of the completion each selector picks: majority vote, and with PRM scores naive
    (highest score) and weighted (answer with the largest sum of scores). Unfinished traces
    (cut by a length or depth limit) take no part when any trace finished."""
    pool = [i for i, t in enumerate(traces) if t.finished] or list(range(len(traces)))
    answers = [traces[i].answer for i in pool]
    picks = {"majority": _back(pool, majority_index(answers))}
    if all(traces[i].score is not None for i in pool) and pool:
        scores = [traces[i].score for i in pool]
        with_answer = [k for k, a in enumerate(answers) if answer_key(a) is not None]
        picks["naive"] = _back(pool, max(with_answer, key=lambda k: scores[k]) if with_answer else None)
        picks["weighted"] = _back(pool, majority_index(answers, scores))
    return picks


def _back(pool: list[int], k: int | None) -> int | None:
    return pool[k] if k is not None else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(rows: list[dict]) -> dict[str, float]:
    """pass@1 (mean per-sample accuracy), maj@N and pass@N over finished problem rows."""
    if not rows:
        return {"problems": 0}
    n_problems = len(rows)
    pass1 = sum(sum(bool(v) for v in r["verified"]) / max(len(r["verified"]), 1) for r in rows) / n_problems
    maj = sum(bool(r["majority_verified"]) for r in rows) / n_problems
    pass_n = sum(any(r["verified"]) for r in rows) / n_problems
    n = max(len(r["verified"]) for r in rows)
    out = {"problems": n_problems, "n": n, "pass@1": pass1, f"maj@{n}": maj}
    for how in ("naive", "weighted"):
        if all(f"{how}_verified" in r for r in rows):
            out[f"{how}@{n}"] = sum(bool(r[f"{how}_verified"]) for r in rows) / n_problems
    out[f"pass@{n}"] = pass_n
    out["tokens"] = sum(r.get("generated_tokens", sum(r["num_tokens"])) for r in rows)
    return out
