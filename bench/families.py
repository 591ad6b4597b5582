"""Which reasoning-gym families the bundled policy solves sometimes: best-of-8 per family.

    python bench/families.py [--families ...] [--problems 32] [--n 8] [--seed 5000] [--max-tokens 192]
        [--out runs/bench-families]

One `synth generate` run per family (reasoning-gym's own difficulty settings; `*_small`, `*_2digit`: easier
settings, `SMALL` below; `basic_arithmetic_small` and `chain_sum_small` are those of configs/quickstart.yaml), reused when --out has it. Prints
pass@1, maj@8 and pass@8 (unbiased) with their standard errors over problems, the share of completions
that gave an answer at all, and mean tokens per completion. Families with pass@8 > 0 are the ones the
broad recipes train on.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.evaluate import majority_index, pass_at_k  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.problems import PoolConfig  # noqa: E402

SMALL = {
    "basic_arithmetic_small": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "chain_sum_small": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    "basic_arithmetic_2digit": (
        "basic_arithmetic",
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    ),
    "products_small": ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "simple_equations_small": (
        "simple_equations",
        {
            "min_terms": 2,
            "max_terms": 2,
            "min_value": 1,
            "max_value": 10,
            "operators": ["+", "-"],
            "operators_weights": [0.5, 0.5],
        },
    ),
    "leg_counting_small": (
        "leg_counting",
        {"min_animals": 1, "max_animals": 2, "min_instances": 1, "max_instances": 3},
    ),
    "decimal_chain_sum_small": (
        "decimal_chain_sum",
        {
            "min_terms": 2,
            "max_terms": 2,
            "min_digits": 1,
            "max_digits": 1,
            "min_decimal_places": 1,
            "max_decimal_places": 1,
        },
    ),
}
FAMILIES = [
    *SMALL,
    "basic_arithmetic",
    "chain_sum",
    "decimal_arithmetic",
    "decimal_chain_sum",
    "products",
    "simple_equations",
    "gsm_symbolic",
    "leg_counting",
    "gcd",
    "lcm",
    "count_bits",
    "letter_counting",
    "power_function",
    "aiw",
    "bitwise_arithmetic",
    "fraction_simplification",
    "number_format",
    "time_intervals",
]


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--out", default="runs/bench-families")
    args = ap.parse_args()
    policy, results = None, []
    for family in args.families:
        task, knobs = SMALL.get(family, (family, {}))
        out = Path(args.out) / f"{family}-n{args.n}-seed{args.seed}"
        cfg = GenerateConfig(
            output_dir=str(out),
            resume=True,
            problems_per_batch=16,
            search=SearchConfig(strategy="best_of_n", n=args.n, temperature=0.8, max_tokens=args.max_tokens),
            pool=PoolConfig(tasks=[task], num_problems=args.problems, seed=args.seed, task_config=knobs),
        )
        if not (out / "summary.json").exists():
            policy = policy or load_policy(cfg)
            generate(cfg, policy=policy)
        rows = Journal(out / "rows.jsonl").read()
        p1 = [sum(r["verified"]) / len(r["verified"]) for r in rows]
        pn = [pass_at_k(len(r["verified"]), sum(r["verified"]), args.n) for r in rows]
        maj = []
        for r in rows:
            i = majority_index(r["answers"])
            maj.append(float(i is not None and bool(r["verified"][i])))
        answered = statistics.fmean(a is not None for r in rows for a in r["answers"])
        tokens = statistics.fmean(t for r in rows for t in r["num_tokens"])
        results.append((family, rows[0]["gold_answer"], mean_se(p1), mean_se(maj), mean_se(pn), answered, tokens))

    print(
        f"\nbest-of-{args.n} of the bundled SmolLM2-135M, {args.problems} problems per family (seed {args.seed}), T=0.8\n"
    )
    print(f"| family | a gold answer | pass@1 | maj@{args.n} | pass@{args.n} | answered | tokens |")
    print("|---|---|---|---|---|---|---|")
    for family, gold, p1, maj, pn, answered, tokens in sorted(results, key=lambda x: -x[4][0]):
        cell = lambda m: f"{m[0]:.3f} ± {m[1]:.3f}"  # noqa: E731
        gold = gold if len(gold) <= 16 else gold[:13] + "..."
        print(f"| {family} | `{gold}` | {cell(p1)} | {cell(maj)} | {cell(pn)} | {answered:.2f} | {tokens:.0f} |")


if __name__ == "__main__":
    main()
