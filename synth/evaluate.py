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


def picked(row: dict, selector: str) -> bool:
    """Whether `selector`'s pick of a row is verified; majority's where the row has no such pick (no PRM)."""
    value = row.get(f"{selector}_verified")
    return bool(row["majority_verified"] if value is None else value)


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
        if all(r.get(f"{how}_verified") is not None for r in rows):
            out[f"{how}@{n}"] = sum(bool(r[f"{how}_verified"]) for r in rows) / n_problems
    out[f"pass@{n}"] = pass_n
    out["tokens"] = sum(r.get("generated_tokens", sum(r["num_tokens"])) for r in rows)
    return out


# ---- accuracy vs N curves (subsampled), plots, compute-optimal selection -------------------------

SELECTORS = ("majority", "naive", "weighted")


def row_traces(row: dict) -> list:
    """Trace records of a dataset row (only the fields selection needs)."""
    from synth.records import Trace

    scores = row.get("scores") or [None] * len(row["answers"])
    return [
        Trace(row["id"], "", [], answer=a, verified=v, finished=f, score=s)
        for a, v, f, s in zip(row["answers"], row["verified"], row["finished"], scores)
    ]


def powers_of_two(n: int) -> list[int]:
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return out


def accuracy_curves(rows: list[dict], samples: int = 16, seed: int = 0) -> dict[str, dict[int, float]]:
    """maj@n, naive@n, weighted@n and pass@n for n = 1, 2, 4, ... N. pass@n is the unbiased estimate
    (Chen et al., 2021) and every selector's n=1 point the exact mean accuracy of one sample (so it
    equals pass@1); the selectors at 1 < n < N are the mean over `samples` random subsets of size n of
    every problem's completions (as in the blog's figures), and exact at n = N."""
    import random

    rng = random.Random(seed)
    n_max = max(len(r["answers"]) for r in rows)
    curves: dict[str, dict[int, float]] = {}
    for n in powers_of_two(n_max):
        hits: dict[str, float] = {}
        for row in rows:
            traces = row_traces(row)
            correct = sum(bool(t.verified) for t in traces)
            hits["pass"] = hits.get("pass", 0.0) + pass_at_k(len(traces), correct, min(n, len(traces)))
            if n == 1:
                for how in select_answers(traces):
                    hits[how] = hits.get(how, 0.0) + correct / len(traces)
                continue
            draws = 1 if n >= len(traces) else samples
            for _ in range(draws):
                subset = [traces[i] for i in sorted(rng.sample(range(len(traces)), min(n, len(traces))))]
                for how, i in select_answers(subset).items():
                    hits[how] = hits.get(how, 0.0) + (bool(subset[i].verified) if i is not None else 0.0) / draws
        for how in sorted(hits, key=lambda h: (h == "pass", SELECTORS.index(h) if h in SELECTORS else 0)):
            curves.setdefault(how, {})[n] = hits[how] / len(rows)
    return curves


def first_n_reaching(curve: dict[int, float], target: float) -> int | None:
    """Smallest N at which a curve reaches `target` accuracy (None: never)."""
    return next((n for n in sorted(curve) if curve[n] >= target - 1e-9), None)


DIFFICULTY_ESTIMATES = ("auto", "pool", "prm", "oracle")


class EvalError(ValueError):
    """Rows that cannot be evaluated as asked (the CLI prints it without a traceback)."""


def resolve_difficulty(rows: list[dict], buckets: int = 3, estimate: str = "auto") -> str:
    """The difficulty estimate `difficulty_buckets` uses for these rows ("auto" resolved); errors name
    what an explicit estimate lacks."""
    if estimate not in DIFFICULTY_ESTIMATES:
        raise EvalError(f"unknown difficulty estimate {estimate!r}: choose one of {', '.join(DIFFICULTY_ESTIMATES)}")
    has_pool = all(r.get("difficulty") is not None for r in rows)
    has_scores = all(r.get("scores") and any(s is not None for s in r["scores"]) for r in rows)
    if estimate == "auto":
        graded = has_pool and len({r["difficulty"] for r in rows}) >= buckets
        return "pool" if graded else "prm" if has_scores else "oracle"
    if estimate == "pool" and not has_pool:
        raise EvalError("difficulty estimate 'pool' needs a difficulty on every row (this pool has none)")
    if estimate == "prm" and not has_scores:
        raise EvalError("difficulty estimate 'prm' needs PRM scores on every row (generate with a prm)")
    return estimate


def difficulty_buckets(rows: list[dict], buckets: int = 3, estimate: str = "auto") -> dict[str, int]:
    """Problem id -> bucket (0 = easiest) by a difficulty estimate:
    pool: the pool's own difficulty field; prm: the mean PRM score of the row's completions (the
    blog's model-based estimate: known without the gold answer); oracle: pass@1 against the gold
    answer (the blog's oracle: in-sample only); auto: pool where every row has one and it takes at least
    `buckets` distinct values (a pool of two levels cannot make thirds), else prm, else oracle."""
    estimate = resolve_difficulty(rows, buckets, estimate)

    def level(r):
        if estimate == "pool":
            return float(r["difficulty"])
        if estimate == "prm":
            scores = [s for s in r["scores"] if s is not None]
            return -sum(scores) / len(scores)
        return -sum(bool(v) for v in r["verified"]) / max(len(r["verified"]), 1)

    ordered = sorted(rows, key=lambda r: (level(r), r["id"]))
    return {r["id"]: min(i * buckets // len(ordered), buckets - 1) for i, r in enumerate(ordered)}


def compute_optimal(
    results: dict[str, list[dict]], selector: str = "weighted", buckets: dict[str, int] | None = None, folds: int = 5
) -> dict:
    """The blog's compute-optimal strategy: per difficulty bucket, the strategy with the best accuracy
    at the same budget N. Returns its choice per bucket, its in-sample accuracy (choice and score on the
    same problems) and its cross-fitted accuracy: problems split into `folds`, each fold scored with the
    choice made on the other folds, so a problem never helps pick its own strategy. `correct` holds the
    cross-fitted outcome per problem id (for paired comparisons)."""
    names = list(results)
    by_id = {name: {r["id"]: r for r in rows} for name, rows in results.items()}
    common = sorted(set.intersection(*(set(d) for d in by_id.values())))
    buckets = buckets or difficulty_buckets([by_id[names[0]][i] for i in common])

    def correct(name, pid):
        r = by_id[name][pid]
        return picked(r, selector)

    def choose(ids: list[str]) -> dict[int, str]:
        out = {}
        for b in sorted(set(buckets.values())):
            in_bucket = [i for i in ids if buckets.get(i) == b]
            out[b] = max(names, key=lambda name: sum(correct(name, i) for i in in_bucket))  # ties: the first run
        return out

    choice = choose(common)
    in_sample = sum(correct(choice[buckets[i]], i) for i in common)
    folds = max(folds, 1)
    fold_of = {pid: k % folds for k, pid in enumerate(common)}
    crossed = {}
    for f in range(folds):
        fold_choice = choose([i for i in common if fold_of[i] != f]) if folds > 1 else choice
        crossed.update({i: correct(fold_choice[buckets[i]], i) for i in common if fold_of[i] == f})
    n = max(len(common), 1)
    return {
        "choice": choice,
        "accuracy": in_sample / n,
        "cross_fitted_accuracy": sum(crossed.values()) / n,
        "folds": folds,
        "correct": crossed,
    }


def accuracy_by_bucket(rows: list[dict], buckets: dict[str, int], selector: str = "majority") -> dict[int, float]:
    out: dict[int, list[bool]] = {}
    for r in rows:
        if r["id"] in buckets:
            out.setdefault(buckets[r["id"]], []).append(picked(r, selector))
    return {b: sum(v) / len(v) for b, v in sorted(out.items())}


def plot_curves(curves: dict[str, dict[str, dict[int, float]]], path, title: str = "accuracy vs N") -> None:
    """One chart: a line per (strategy, selector), N on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, by_selector in curves.items():
        for how, curve in by_selector.items():
            if how == "pass" and len(curves) > 1:
                continue
            xs = sorted(curve)
            ax.plot(xs, [curve[x] for x in xs], marker="o", label=f"{strategy} {how}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (completions per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_table(curves: dict[str, dict[str, dict[int, float]]]) -> str:
    ns = sorted({n for by in curves.values() for c in by.values() for n in c})
    lines = ["| strategy | selector | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for strategy, by_selector in curves.items():
        for how, curve in by_selector.items():
            lines.append(
                f"| {strategy} | {how} | " + " | ".join(f"{curve[n]:.3f}" if n in curve else "" for n in ns) + " |"
            )
    return "\n".join(lines)


def curves_section(rows: list[dict], out, strategy: str) -> str:
    """A dataset card's accuracy-vs-N section for one run: the table, and the plot written next to it."""
    from pathlib import Path

    curves = {strategy: accuracy_curves(rows)}
    plot_curves(curves, Path(out) / "accuracy_vs_n.png", title=f"{strategy}: accuracy vs N")
    return f"## Accuracy vs N (subsampled)\n\n{curves_table(curves)}\n\n![accuracy vs N](accuracy_vs_n.png)\n"
