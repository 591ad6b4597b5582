"""Compare finished `bench/search_compare.py` runs without generating again.

    python bench/search_rescore.py --out runs/bench-search-n4-sentence --seeds 1000 2000 4000 --n 4
        [--prm default --step-cut delimiter]   # the final pick redone by another PRM
        [--against runs/bench-search-n4-sentence-m2]   # paired difference between two runs, per strategy

With --prm, every strategy's completions are rescored by that PRM (`rescore_rows`) and its weighted pick
is compared with the run's own, both as gains over the run's majority. With --against, each strategy's
weighted pick (and best-of-N's majority) of --out is compared with the same problems of the other run.
Problems repeated across seeds count once, as in the bench.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import first_ids, paired_gain, search_run_dir  # noqa: E402

from synth.generate.search import STRATEGIES  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.steps import StepRule  # noqa: E402


def load_runs(out: str, seeds: list[int], n: int) -> dict[str, list[dict]]:
    """Rows of every strategy a search_compare run has (best-of-N at least), all seeds."""
    rows: dict[str, list[dict]] = {}
    for strategy in STRATEGIES:
        paths = [search_run_dir(out, seed, strategy, n) / "rows.jsonl" for seed in seeds]
        if strategy != "best_of_n" and not all(p.exists() for p in paths):
            continue  # a strategy that run did not include
        for path in paths:
            if not path.exists():
                raise SystemExit(f"no finished run at {path}: run bench/search_compare.py --out {out} first")
            rows.setdefault(strategy, []).extend(Journal(path).read())
    return rows


def picks(rows: list[dict], key: str) -> dict[str, bool]:
    return {r["id"]: bool(r[key]) for r in rows}


def describe(correct: dict[str, bool], majority: dict[str, bool], ids: list[str]) -> str:
    gain, se = paired_gain(correct, majority, ids)
    return f"{sum(correct[i] for i in ids) / len(ids):.3f} ({gain:+.1f} ± {se:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="a bench/search_compare.py --out directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--prm", default=None, help="rescore the final traces with this PRM ('default', a dir, ...)")
    ap.add_argument("--prm-dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    ap.add_argument(
        "--step-cut",
        default="delimiter",
        choices=["delimiter", "sentence"],
        help="the steps --prm scores (each completion cut again)",
    )
    ap.add_argument("--aggregation", default="last", choices=["last", "min", "prod", "mean"])
    ap.add_argument("--against", default=None, help="another --out directory with the same seeds and N")
    args = ap.parse_args()
    if not args.prm and not args.against:
        raise SystemExit("give --prm (rescore the final pick) and/or --against (compare two runs)")

    rows = load_runs(args.out, args.seeds, args.n)
    ids = sorted(first_ids(rows["best_of_n"]).values())
    majority = picks(rows["best_of_n"], "majority_verified")
    print(f"{args.out}, N={args.n}, {len(ids)} distinct problems; gains in points (paired, ± standard error)")
    if args.prm:
        from synth.prm.load import load_prm
        from synth.prm.rescore import rescore_rows

        prm = load_prm(args.prm, dtype=args.prm_dtype)
        keep = set(ids)
        for strategy, rs in rows.items():
            rs = [r for r in rs if r["id"] in keep]
            rescored = rescore_rows(rs, prm, args.aggregation, StepRule(args.step_cut))
            own, new = picks(rs, "weighted_verified"), picks(rescored, "weighted_verified")
            print(
                f"{strategy}: weighted {describe(own, majority, ids)} over majority | rescored by {args.prm} "
                f"{describe(new, majority, ids)}",
                flush=True,
            )
    if args.against:
        other = load_runs(args.against, args.seeds, args.n)
        other_ids = [{r["id"] for r in rs} for rs in other.values()]
        missing = [i for i in ids if any(i not in got for got in other_ids)]
        if missing:
            raise SystemExit(
                f"{args.against} lacks {len(missing)} of the {len(ids)} problems of {args.out} (e.g. {missing[0]}): "
                "compare runs of the same --seeds and --problems"
            )
        gain, se = paired_gain(majority, picks(other["best_of_n"], "majority_verified"), ids)
        print(f"{args.out} - {args.against}: majority {gain:+.1f} ± {se:.1f}")
        for strategy in rows:
            gain, se = paired_gain(
                picks(rows[strategy], "weighted_verified"), picks(other[strategy], "weighted_verified"), ids
            )
            print(f"{args.out} - {args.against}: {strategy} weighted {gain:+.1f} ± {se:.1f}")


if __name__ == "__main__":
    main()
