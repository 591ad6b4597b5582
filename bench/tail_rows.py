"""A tree search at several `search.tail_rows` (a step call's last rows cut early), each against the first
(by default 0: waiting for every row), on one pool: wall time, generated tokens, unfinished final
candidates, and weighted@N and maj@N with the paired difference (± one standard error over problems).

    python bench/tail_rows.py [--problems 96] [--seed 2000] [--strategy dvts] [--tasks FAMILY ...]
        [--tail-rows 0 8] [--out runs/bench-tail-rows]

Held-out arithmetic pool (`--tasks`: those reasoning-gym families instead, at --seed), N=16, M=2, sentence
steps, `default-sentence`, batches of 8 problems, the bundled SmolLM2 on the transformers engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, paired_gain, tree_search  # noqa: E402

from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=96)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--strategy", default="dvts", choices=["beam_search", "dvts", "particle_filtering", "mcts"])
    ap.add_argument("--tail-rows", type=int, nargs="+", default=[0, 8], help="the first is the reference")
    ap.add_argument("--tasks", nargs="+", help="reasoning-gym families instead of the held-out arithmetic pool")
    ap.add_argument("--out", default="runs/bench-tail-rows")
    args = ap.parse_args()
    search = tree_search(args.strategy)
    base = GenerateConfig(
        pool=bench_pool(args.tasks, args.seed, args.problems), prm="default-sentence", search=search, overwrite=True
    )
    policy, prm = load_policy(base), load_prm("default-sentence")
    runs = {}
    for tail in dict.fromkeys(args.tail_rows):
        d = Path(args.out) / f"tail{tail}"
        cfg = dataclasses.replace(base, search=dataclasses.replace(search, tail_rows=tail), output_dir=str(d))
        summary = generate(cfg, policy=policy, prm=prm)
        runs[tail] = (summary, {r["id"]: r for r in Journal(d / "rows.jsonl").read()})
    ref = args.tail_rows[0]
    ids = list(runs[ref][1])
    pool = " ".join(args.tasks) if args.tasks else "held-out"
    print(f"\n{args.strategy}, {len(ids)} {pool} problems (seed {args.seed}), N=16, sentence steps\n")
    print("| tail_rows | wall s | generated tokens | unfinished candidates | weighted@16 | maj@16 |")
    print("|---|---|---|---|---|---|")
    for tail, (s, rows) in runs.items():
        unfinished = sum(not f for r in rows.values() for f in r["finished"])
        acc = {k: sum(rows[i][f"{k}_verified"] for i in ids) / len(ids) for k in ("weighted", "majority")}
        print(
            f"| {tail} | {s['wall_s']:.1f} | {sum(r['generated_tokens'] for r in rows.values())} | {unfinished} | "
            f"{acc['weighted']:.3f} | {acc['majority']:.3f} |"
        )
    old = runs[ref][1]
    for tail in list(runs)[1:]:
        new = runs[tail][1]
        print(f"\ntail_rows {tail} against {ref}: {runs[ref][0]['wall_s'] / runs[tail][0]['wall_s']:.2f}x faster")
        for k in ("weighted", "majority"):
            gain, se = paired_gain(
                {i: new[i][f"{k}_verified"] for i in ids}, {i: old[i][f"{k}_verified"] for i in ids}, ids
            )
            print(f"{k}: {gain:+.1f} ± {se:.1f} points")


if __name__ == "__main__":
    main()
