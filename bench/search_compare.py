"""Best-of-N vs beam search, DVTS, particle filtering and MCTS with the bundled SmolLM2 and a PRM, one run, same pool.

    python bench/search_compare.py [--problems 24] [--seeds 1000] [--ns 4,16] [--prm default|random|PATH] [--out runs/bench-search]
        [--beam-width 4] [--aggregation last] [--lookahead 0] [--filter-duplicates] [--complete-leaves] [--temperature 0.8]
        [--step-cut delimiter|sentence] [--max-iterations 6] [--strategies best_of_n beam_search dvts ...]
        [--pf-temperature 1.0] [--mcts-rollout]

For each N: accuracy of majority, best-of-N naive/weighted and every tree strategy (weighted selection),
with each strategy's paired gain over majority and over DVTS (± standard error over problems),
and per problem: tokens generated, prompt tokens (per sample) and how many of them reused kept KV
instead of being prefilled, PRM step scores, wall time relative to best-of-N.
The held-out pools use seeds 1000+ (the default PRM was trained on seed 100); several --seeds pool
their distinct problems. Small arithmetic pools
repeat problems across seeds: accuracy is also printed on the problems that are not in the PRM's
training pool (--prm-train-pool, a `synth generate` recipe). --reuse reads finished runs of --out
instead of running them again (wall times from its table.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import first_ids, held_out_pool, paired_gain, search_run_dir  # noqa: E402

from synth.config import from_dict, load_yaml  # noqa: E402
from synth.evaluate import compute_optimal, difficulty_buckets  # noqa: E402
from synth.filter.select import normalize  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import STRATEGIES, MCTSConfig, ParticleConfig, SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402
from synth.problems import load_pool  # noqa: E402


class RandomPRM:
    """A control: every step gets a seeded uniform random score (guidance no better than chance)."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        return [[self.rng.random() for _ in path] for path in steps]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=24, help="problems per held-out seed")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1000],
        help="held-out pool seeds (problems repeated across seeds count once)",
    )
    ap.add_argument("--ns", default="4,16")
    ap.add_argument(
        "--prm", default="default", help="'default', a PRM dir, or 'random' (a control: random step scores)"
    )
    ap.add_argument(
        "--prm-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="dtype the PRM scores in (auto: bf16 where the hardware has native bf16)",
    )
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument(
        "--aggregation",
        default="last",
        choices=["last", "min", "prod", "mean"],
        help="step-score aggregation for ranking beams and for the final weighted selection",
    )
    ap.add_argument("--lookahead", type=int, default=0)
    ap.add_argument("--filter-duplicates", action="store_true")
    ap.add_argument(
        "--complete-leaves",
        action="store_true",
        help="beam search / DVTS sample unfinished final candidates on to their end (search.complete_leaves)",
    )
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument(
        "--step-cut",
        default="delimiter",
        choices=["delimiter", "sentence"],
        help="steps end at '\\n\\n' or at sentence ends (use a PRM trained on sentence steps)",
    )
    ap.add_argument("--max-iterations", type=int, default=6, help="max steps of a beam / subtree")
    ap.add_argument(
        "--prm-train-pool",
        default="configs/prm-smollm2-generate.yaml",
        help="generate recipe whose pool the PRM was trained on ('' for none)",
    )
    ap.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=list(STRATEGIES),
        help="best_of_n always runs (majority and the compute reference)",
    )
    ap.add_argument("--pf-temperature", type=float, default=1.0, help="particle filtering's resampling temperature")
    ap.add_argument("--mcts-rollout", action="store_true", help="MCTS values steps by verified rollouts")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --out instead of rerunning them")
    ap.add_argument("--out", default="runs/bench-search", help="runs go to OUT/seed{S}/{strategy}-n{N}")
    args = ap.parse_args()

    seen = set()
    if args.prm_train_pool:
        train_pool = from_dict(GenerateConfig, load_yaml(args.prm_train_pool)).pool
        seen = {normalize(p.problem) for p in load_pool(train_pool)}
    ns = [int(x) for x in args.ns.split(",")]
    strategies = ["best_of_n"] + [s for s in args.strategies if s != "best_of_n"]
    policy = prm = None
    rows: dict[tuple[int, str], list[dict]] = {}  # (N, strategy) -> rows of all seeds
    walls: dict[tuple[int, str], float] = {}  # summed over seeds
    for seed in args.seeds:
        seed_out = Path(args.out) / f"seed{seed}"
        old_walls = {}
        if args.reuse and (seed_out / "table.json").exists():
            old_walls = {
                (r["N"], r["strategy"]): r["wall_s"] for r in json.loads((seed_out / "table.json").read_text())
            }
        seed_table = []
        for n in ns:
            for strategy in strategies:
                out = search_run_dir(args.out, seed, strategy, n)
                search = SearchConfig(
                    strategy=strategy,
                    n=n,
                    beam_width=min(args.beam_width, n),
                    max_tokens=160,
                    step_max_tokens=64,
                    max_iterations=args.max_iterations,
                    temperature=args.temperature,
                    step_cut=args.step_cut,
                    aggregation=args.aggregation,
                    lookahead=args.lookahead,
                    filter_duplicates=args.filter_duplicates,
                    complete_leaves=args.complete_leaves,
                    particles=ParticleConfig(temperature=args.pf_temperature),
                    mcts=MCTSConfig(rollout=args.mcts_rollout),
                )
                cfg = GenerateConfig(
                    pool=held_out_pool(seed, args.problems),
                    search=search,
                    prm=args.prm,
                    output_dir=str(out),
                    overwrite=True,
                    problems_per_batch=args.problems,
                )
                if (n, strategy) in old_walls and (out / "summary.json").exists():
                    wall = old_walls[(n, strategy)]
                else:
                    if policy is None:
                        policy = load_policy(GenerateConfig())
                        prm = RandomPRM() if args.prm == "random" else load_prm(args.prm, dtype=args.prm_dtype)
                    t = time.perf_counter()
                    generate(cfg, policy=policy, prm=prm)
                    wall = time.perf_counter() - t
                seed_table.append({"N": n, "strategy": strategy, "wall_s": wall})
                walls[(n, strategy)] = walls.get((n, strategy), 0.0) + wall
                rows.setdefault((n, strategy), []).extend(Journal(out / "rows.jsonl").read())
        seed_out.mkdir(parents=True, exist_ok=True)
        (seed_out / "table.json").write_text(json.dumps(seed_table, indent=2))

    # Count every distinct problem once (small arithmetic pools repeat problems across seeds).
    first_id = first_ids(rows[(ns[0], "best_of_n")])
    ids = sorted(first_id.values())
    clean = sorted(i for key, i in first_id.items() if key not in seen)
    table = []
    for (n, strategy), rs in rows.items():
        by_id = {r["id"]: r for r in rs}
        kept = [by_id[i] for i in ids]
        share = lambda key, kept=kept: sum(bool(r[key]) for r in kept) / len(kept)  # noqa: E731
        per = lambda key, kept=kept: sum(r.get(key) or 0 for r in kept) / len(kept)  # noqa: E731
        table.append(
            {
                "N": n,
                "strategy": strategy,
                "majority": share("majority_verified"),
                "naive": share("naive_verified"),
                "weighted": share("weighted_verified"),
                "pass": sum(any(r["verified"]) for r in kept) / len(kept),
                "gen_tok/problem": per("generated_tokens"),
                "prefill_tok/problem": per("prefill_tokens"),
                "kv_reused_tok/problem": per("cached_tokens"),
                "prm_steps/problem": per("prm_steps"),
                "wall_s": walls[(n, strategy)],
                "wall_vs_bon": walls[(n, strategy)] / walls[(n, "best_of_n")],
            }
        )
    print(
        f"\n{len(ids)} distinct held-out problems (reasoning-gym seeds {', '.join(map(str, args.seeds))}, {args.problems} each), "
        f"SmolLM2-135M + PRM '{args.prm}', M={args.beam_width}, aggregation {args.aggregation}, lookahead {args.lookahead}, "
        f"filter_duplicates {args.filter_duplicates}, complete_leaves {args.complete_leaves}, T={args.temperature}, "
        f"steps cut at {args.step_cut}, max_iterations {args.max_iterations}"
    )
    head = [
        "N",
        "strategy",
        "majority",
        "naive",
        "weighted",
        "pass",
        "gen_tok/problem",
        "prefill_tok/problem",
        "kv_reused_tok/problem",
        "prm_steps/problem",
        "wall_s",
        "wall_vs_bon",
    ]
    print(" | ".join(head))
    for r in table:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    for n in ns:
        rs = {r["strategy"]: r for r in table if r["N"] == n}
        print(
            f"N={n}: majority {rs['best_of_n']['majority']:.3f} | best-of-N weighted {rs['best_of_n']['weighted']:.3f} | "
            + " | ".join(
                f"{s} {rs[s]['weighted']:.3f} (wall {rs[s]['wall_vs_bon']:.2f}x best-of-N)" for s in strategies[1:]
            )
        )
        majority = {r["id"]: r["majority_verified"] for r in rows[(n, "best_of_n")]}
        weighted = {s: {r["id"]: r["weighted_verified"] for r in rows[(n, s)]} for s in strategies}
        for name, subset in (("all", ids), ("not in the PRM's training pool", clean if args.prm_train_pool else [])):
            if len(subset) < 2:
                continue
            gains = [
                f"{s} {g:+.1f} ± {e:.1f}" for s in strategies for g, e in [paired_gain(weighted[s], majority, subset)]
            ]
            print(
                f"N={n}, search - majority in points (paired, ± standard error), {len(subset)} problems {name}: "
                + " | ".join(gains)
            )
            if "dvts" in weighted:
                over = [
                    f"{s} {g:+.1f} ± {e:.1f}"
                    for s in strategies
                    if s not in ("best_of_n", "dvts")
                    for g, e in [paired_gain(weighted[s], weighted["dvts"], subset)]
                ]
                if over:
                    print(f"N={n}, search - DVTS, {len(subset)} problems {name}: " + " | ".join(over))
        # The blog's compute-optimal strategy: per difficulty bucket (model-based: the mean PRM score of the
        # best-of-N completions), the strategy that is best there, chosen on the other folds' problems.
        keep = set(ids)
        results = {s: [r for r in rows[(n, s)] if r["id"] in keep] for s in strategies}
        buckets = difficulty_buckets(results["best_of_n"], 3, "prm")
        opt = compute_optimal(results, "weighted", buckets, folds=5)
        gain, se = paired_gain(opt["correct"], majority, ids)
        print(
            f"N={n}, compute-optimal (3 buckets by mean PRM score, 5-fold cross-fitted): {opt['cross_fitted_accuracy']:.3f} "
            f"({gain:+.1f} ± {se:.1f} over majority; in-sample {opt['accuracy']:.3f}; choice on all problems "
            f"{', '.join(f'{b}: {c}' for b, c in opt['choice'].items())})"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
