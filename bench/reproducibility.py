"""Do the same config and seed write the same rows in different processes? Per setting (dtype, torch
threads), --processes fresh processes each run one DVTS iteration (the first policy call and its PRM
scoring) on the same problems; the table counts the distinct row sets they wrote.

    python bench/reproducibility.py [--processes 8] [--problems 8] [--out runs/bench-reproducibility]

gsm_symbolic problems of seed 1000, N=16, M=2, sentence steps, `default-sentence`, the bundled SmolLM2
on the transformers engine.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, tree_search  # noqa: E402

SETTINGS = [("bfloat16", 2), ("float32", 2), ("bfloat16", 1)]  # (dtype, threads)


def child(dtype: str, problems: int, out: Path) -> None:
    """One process's run; prints the hash of its rows' completions."""
    from synth.generate.run import GenerateConfig, generate
    from synth.journal import Journal

    cfg = GenerateConfig(
        pool=bench_pool(["gsm_symbolic"], 1000, problems),
        prm="default-sentence",
        search=tree_search("dvts", max_iterations=1),
        dtype=dtype,
        prm_dtype=dtype,
        problems_per_batch=problems,
        output_dir=str(out),
        overwrite=True,
    )
    generate(cfg)
    rows = [(r["id"], r["completions"]) for r in Journal(out / "rows.jsonl").read()]
    print("ROWS", hashlib.md5(repr(rows).encode()).hexdigest())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--out", default="runs/bench-reproducibility")
    ap.add_argument("--child", nargs=2, metavar=("DTYPE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.problems, Path(args.child[1]))
        return
    print(f"\n{args.problems} gsm_symbolic problems, one DVTS iteration, {args.processes} processes per setting\n")
    print("| dtype | torch threads | processes | distinct row sets | most common |")
    print("|---|---|---|---|---|")
    for dtype, threads in SETTINGS:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        hashes = collections.Counter()
        for k in range(args.processes):
            d = Path(args.out) / f"{dtype}-{threads}" / str(k)
            cmd = [sys.executable, __file__, "--problems", str(args.problems), "--child", dtype, str(d)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            hashes[next(x.split()[1] for x in res.stdout.splitlines() if x.startswith("ROWS "))] += 1
        print(f"| {dtype} | {threads} | {args.processes} | {len(hashes)} | {hashes.most_common(1)[0][1]} |")


if __name__ == "__main__":
    main()
