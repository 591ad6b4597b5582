"""Traces/s of answer verification and of the `synth filter` filters on synthetic traces.

    python bench/filter_throughput.py [--rows 100000] [--n 16] [--latex-share 0.08] [--seed 0]

Builds `--rows` synthetic completions (`--n` per problem) that end in a \\boxed{} answer: plain
numbers and fractions (verified in-process by the fast path) and a `--latex-share` of LaTeX answers
that need math-verify (\\frac{\\sqrt2}2 vs \\sqrt2/2, (x+1)^2 vs x^2+2x+1, ...), with exact and
near-duplicate completions mixed in. Then it times, on the same traces:
  verify (pool)     extract_answer + synth.verify.verify_many (math-verify on the process pool)
  verify (1 proc)   extract_answer + the same checks in a plain single-process loop
  filters           flatten + the default `synth filter` filters (dedup, near-dup, ...)
and prints traces/s and the pool/single-process ratio. The default run takes about 2-3 minutes
on 2 cores; use --rows to shrink it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.filter.select import Filters, build_filters, flatten, run_filters  # noqa: E402
from synth.verify import _fast_equal, _math_verify, _pool, extract_answer, verify_many  # noqa: E402

# (gold, equal prediction, wrong prediction): each needs math-verify
LATEX = [
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", "\\sqrt{3}/2"),
    ("x^2+2x+1", "(x+1)^2", "(x+2)^2"),
    ("2\\pi", "\\pi \\cdot 2", "3\\pi"),
    ("[0,1)", "[0, 1)", "(0,1]"),
    ("3", "x=3", "x=4"),
    ("\\{1,2\\}", "\\{2,1\\}", "\\{1,3\\}"),
    ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", "\\sqrt{3}"),
]
WORDS = "we add the numbers first then multiply carefully and check each partial result before moving on".split()


def completion(rng: random.Random, answer: str) -> str:
    steps = [
        " ".join(rng.choices(WORDS, k=rng.randint(8, 20))) + f" giving {rng.randint(1, 999)}."
        for _ in range(rng.randint(2, 5))
    ]
    return "\n\n".join(steps + [f"The answer is $\\boxed{{{answer}}}$."])


def build_rows(traces: int, n: int, latex_share: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for p in range(max(1, traces // n)):
        if rng.random() < latex_share:
            gold, good, bad = rng.choice(LATEX)
        else:
            a, b = rng.randint(1, 500), rng.randint(1, 500)
            gold = str(a + b)
            good = rng.choice([gold, f"{gold}.0", f"\\frac{{{2 * (a + b)}}}{{2}}"])
            bad = str(a + b + rng.randint(1, 9))
        texts: list[str] = []
        for _ in range(n):
            if texts and rng.random() < 0.1:  # exact duplicate
                texts.append(rng.choice(texts))
            elif texts and rng.random() < 0.1:  # near duplicate: one word changed
                words = rng.choice(texts).split(" ")
                words[rng.randrange(len(words) - 1)] = rng.choice(WORDS)
                texts.append(" ".join(words))
            else:
                texts.append(completion(rng, good if rng.random() < 0.6 else bad))
        rows.append(
            {
                "id": f"p{p}",
                "problem": f"Problem {p}: compute the value.",
                "gold_answer": gold,
                "source": "bench",
                "completions": texts,
                "steps": [t.split("\n\n") for t in texts],
                "num_tokens": [len(t.split()) for t in texts],
                "finished": [True] * n,
                "model": "bench",
                "strategy": "best_of_n",
                "n": n,
            }
        )
    return rows


def pairs_of(rows: list[dict]) -> list[tuple[str | None, str]]:
    return [(extract_answer(t), r["gold_answer"]) for r in rows for t in r["completions"]]


def verify_pool(rows: list[dict]) -> list[bool]:
    return verify_many(pairs_of(rows), timeout=30.0)


def verify_single(rows: list[dict]) -> list[bool]:
    out = []
    for pred, gold in pairs_of(rows):
        if pred is None or not pred.strip():
            out.append(False)
            continue
        fast = _fast_equal(pred, gold)
        out.append(fast if fast is not None else _math_verify(pred, gold))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic traces (completions) in all")
    ap.add_argument("--n", type=int, default=16, help="completions per problem")
    ap.add_argument(
        "--latex-share", type=float, default=0.08, help="fraction of problems whose answers need math-verify"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t = time.perf_counter()
    rows = build_rows(args.rows, args.n, args.latex_share, args.seed)
    traces = sum(len(r["completions"]) for r in rows)
    print(f"{traces} traces, {len(rows)} problems, {os.cpu_count()} CPUs (built in {time.perf_counter() - t:.1f}s)")

    t = time.perf_counter()
    _pool().submit(_math_verify, "1", "1").result()  # start the workers and import math-verify in them
    startup = time.perf_counter() - t

    t = time.perf_counter()
    pooled = verify_pool(rows)
    pool_s = time.perf_counter() - t
    t = time.perf_counter()
    single = verify_single(rows)
    single_s = time.perf_counter() - t
    if pooled != single:
        print(f"WARNING: {sum(a != b for a, b in zip(pooled, single))} verdicts differ (a timeout in the pool?)")
    for r in rows:
        k = len(r["completions"])
        flags = pooled[:k]
        del pooled[:k]
        r["answers"] = [extract_answer(c) for c in r["completions"]]
        r["verified"] = flags

    t = time.perf_counter()
    records = flatten(rows)
    kept, funnel = run_filters(records, build_filters(Filters()))
    filter_s = time.perf_counter() - t

    print(f"\n{'stage':<22}{'seconds':>10}{'traces/s':>12}")
    print(f"{'pool startup':<22}{startup:>10.2f}{'':>12}")
    print(f"{'verify (pool)':<22}{pool_s:>10.2f}{traces / pool_s:>12.0f}")
    print(f"{'verify (1 process)':<22}{single_s:>10.2f}{traces / single_s:>12.0f}")
    print(f"{'filters':<22}{filter_s:>10.2f}{traces / filter_s:>12.0f}")
    print(f"{'verify+filters (pool)':<22}{pool_s + filter_s:>10.2f}{traces / (pool_s + filter_s):>12.0f}")
    print(f"{'verify+filters (1 proc)':<22}{single_s + filter_s:>10.2f}{traces / (single_s + filter_s):>12.0f}")
    print(f"\nverification speed-up, pool / single process: {single_s / pool_s:.2f}x")
    print(f"end to end speed-up (verify + filters):        {(single_s + filter_s) / (pool_s + filter_s):.2f}x")
    print("\nfunnel: " + ", ".join(f"{s.name} -{s.removed}" for s in funnel) + f" -> {len(kept)} kept")


if __name__ == "__main__":
    main()
