"""Best-of-N vs beam search vs DVTS with the bundled SmolLM2 and the default PRM, one run, same pool.

    python bench/search_compare.py [--problems 24] [--ns 4,16] [--prm default|random|PATH] [--out runs/bench-search]
        [--beam-width 4] [--aggregation last] [--lookahead 0] [--filter-duplicates] [--temperature 0.8]

For each N: accuracy of majority, best-of-N naive/weighted, beam search and DVTS (weighted selection),
and per problem: tokens generated, prompt tokens (per sample) and how many of them reused kept KV
instead of being prefilled, PRM step scores, wall time relative to best-of-N.
The held-out pool uses seed 1000 (the default PRM was trained on seed 100). Small arithmetic pools
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

from synth.config import from_dict, load_yaml  # noqa: E402
from synth.filter.select import normalize  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402


class RandomPRM:
    """A control: every step gets a seeded uniform random score (guidance no better than chance)."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        return [[self.rng.random() for _ in path] for path in steps]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--ns", default="4,16")
    ap.add_argument("--prm", default="default", help="'default', a PRM dir, or 'random' (a control: random step scores)")
    ap.add_argument("--prm-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="dtype the PRM scores in (auto: bf16 where the hardware has native bf16)")
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--aggregation", default="last", choices=["last", "min", "prod", "mean"],
                    help="step-score aggregation for ranking beams and for the final weighted selection")
    ap.add_argument("--lookahead", type=int, default=0)
    ap.add_argument("--filter-duplicates", action="store_true")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--prm-train-pool", default="configs/prm-smollm2-generate.yaml",
                    help="generate recipe whose pool the PRM was trained on ('' for none)")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --out instead of rerunning them")
    ap.add_argument("--out", default="runs/bench-search")
    args = ap.parse_args()

    pool = PoolConfig(tasks=["basic_arithmetic", "chain_sum"], num_problems=args.problems, seed=1000,
                      task_config={"basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                                   "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}})
    base = GenerateConfig(pool=pool)
    seen = set()
    if args.prm_train_pool:
        train_pool = from_dict(GenerateConfig, load_yaml(args.prm_train_pool)).pool
        seen = {normalize(p.problem) for p in load_pool(train_pool)}
    old_walls = {}
    if args.reuse and (Path(args.out) / "table.json").exists():
        old_walls = {(r["N"], r["strategy"]): r["wall_s"] for r in json.loads((Path(args.out) / "table.json").read_text())}
    policy = prm = None
    table = []
    for n in [int(x) for x in args.ns.split(",")]:
        walls = {}
        for strategy in ("best_of_n", "beam_search", "dvts"):
            out = Path(args.out) / f"{strategy}-n{n}"
            search = SearchConfig(strategy=strategy, n=n, beam_width=min(args.beam_width, n), max_tokens=160,
                                  step_max_tokens=64, max_iterations=6, temperature=args.temperature,
                                  aggregation=args.aggregation, lookahead=args.lookahead,
                                  filter_duplicates=args.filter_duplicates)
            cfg = GenerateConfig(pool=pool, search=search, prm=args.prm, output_dir=str(out), overwrite=True,
                                 problems_per_batch=args.problems)
            if (n, strategy) in old_walls and (out / "summary.json").exists():
                summary, walls[strategy] = json.loads((out / "summary.json").read_text()), old_walls[(n, strategy)]
            else:
                if policy is None:
                    policy = load_policy(base)
                    prm = RandomPRM() if args.prm == "random" else load_prm(args.prm, dtype=args.prm_dtype)
                t = time.perf_counter()
                summary = generate(cfg, policy=policy, prm=prm)
                walls[strategy] = time.perf_counter() - t
            rows = Journal(out / "rows.jsonl").read()
            clean = [r for r in rows if normalize(r["problem"]) not in seen]
            share = lambda key: sum(bool(r[key]) for r in clean) / max(len(clean), 1)  # noqa: E731
            per = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
            table.append({"N": n, "strategy": strategy, "majority": summary[f"maj@{n}"], "naive": summary.get(f"naive@{n}"),
                          "weighted": summary.get(f"weighted@{n}"), "pass": summary[f"pass@{n}"],
                          "gen_tok/problem": per("generated_tokens"), "prefill_tok/problem": per("prefill_tokens"),
                          "kv_reused_tok/problem": sum(r.get("cached_tokens") or 0 for r in rows) / len(rows),
                          "prm_steps/problem": per("prm_steps"), "wall_s": walls[strategy],
                          "wall_vs_bon": walls[strategy] / walls["best_of_n"], "clean_problems": len(clean),
                          "clean_majority": share("majority_verified"), "clean_weighted": share("weighted_verified")})
    print(f"\n{args.problems} held-out problems (reasoning-gym seed 1000), SmolLM2-135M + PRM '{args.prm}', M={args.beam_width}, "
          f"aggregation {args.aggregation}, lookahead {args.lookahead}, filter_duplicates {args.filter_duplicates}, T={args.temperature}")
    head = ["N", "strategy", "majority", "naive", "weighted", "pass", "gen_tok/problem", "prefill_tok/problem", "kv_reused_tok/problem", "prm_steps/problem", "wall_s", "wall_vs_bon"]
    print(" | ".join(head))
    for r in table:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    for n in sorted({r["N"] for r in table}):
        rs = {r["strategy"]: r for r in table if r["N"] == n}
        maj = rs["best_of_n"]["majority"]
        print(f"N={n}: majority {maj:.3f} | best-of-N weighted {rs['best_of_n']['weighted']:.3f} | beam {rs['beam_search']['weighted']:.3f} "
              f"| DVTS {rs['dvts']['weighted']:.3f} | beam wall {rs['beam_search']['wall_vs_bon']:.2f}x, DVTS wall {rs['dvts']['wall_vs_bon']:.2f}x best-of-N")
        if args.prm_train_pool:
            print(f"N={n}, the {rs['best_of_n']['clean_problems']} problems not in the PRM's training pool: majority "
                  f"{rs['best_of_n']['clean_majority']:.3f} | best-of-N weighted {rs['best_of_n']['clean_weighted']:.3f} | "
                  f"beam {rs['beam_search']['clean_weighted']:.3f} | DVTS {rs['dvts']['clean_weighted']:.3f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
