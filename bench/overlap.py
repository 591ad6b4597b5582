"""Tree search with the policy and the PRM overlapped (`overlap: 2`) against the same search in sequence,
and against best-of-N at the same N.

    python bench/overlap.py [--problems 16] [--n 16] [--strategy dvts] [--step-cut sentence]
        [--prm default-sentence] [--tasks FAMILY ...] [--problems-per-batch K] [--tail-rows 8] [--no-overlap] [--ablate]
        [--prompt-kv-per-row] [--kv-heads-copied] [--out runs/bench-overlap]

Three `synth generate` runs on the held-out arithmetic pool (seed 1000; `--tasks`: those reasoning-gym
families at their own difficulty, seed 1000), transformers engines, all cores: best-of-N; the tree search
with overlap 1 (policy and PRM take turns); the same with overlap 2 (two problem batches in flight in
threads, the engines' calls run in turns on the main thread); `--no-overlap` keeps the first two. `--ablate`
adds best-of-N and the search once more with finished rows compacted away at once ("eager compaction"),
and once more with that, rows joining no running batch and the PRM keeping no KV between calls ("none").
`--prompt-kv-per-row` adds best-of-N and the search once more with each prompt's KV copied to every sample's
row instead of held once (`shares_prefix` off). `--kv-heads-copied` adds both once more with masked attention
(prefills, PRM scoring) copying each KV head to its query heads, as transformers' SDPA does on a CPU
(`gqa_sdpa.SHARES_KV_HEADS` off).
Prints wall time, the time inside the policy and inside the PRM (summary `policy_s`, `prm_s`), the rest
(Python: tree bookkeeping, tokenizing, verification), generated tokens and policy ms per token, wall /
best-of-N wall, wall / max(policy, PRM), and whether overlap 2 wrote the rows of overlap 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, tree_search  # noqa: E402

from synth.generate import gqa_sdpa  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--strategy", default="dvts", choices=["beam_search", "dvts", "particle_filtering", "mcts"])
    ap.add_argument("--step-cut", default="sentence", choices=["delimiter", "sentence"])
    ap.add_argument("--prm", default="default-sentence")
    ap.add_argument("--tasks", nargs="+", help="reasoning-gym families instead of the held-out arithmetic pool")
    ap.add_argument("--problems-per-batch", type=int, help="default: half the problems (two batches, for overlap 2)")
    ap.add_argument(
        "--tail-rows", type=int, default=8, help="search.tail_rows of the tree search (0: wait for every row)"
    )
    ap.add_argument("--no-overlap", action="store_true", help="skip the two overlap-2 runs")
    ap.add_argument("--prompt-kv-per-row", action="store_true", help="add both runs with shared-prefix attention off")
    ap.add_argument("--kv-heads-copied", action="store_true", help="add both runs with KV heads copied under a mask")
    ap.add_argument(
        "--ablate",
        action="store_true",
        help="also best-of-N and the search with eager compaction, and without it, joins nor the PRM's kept KV",
    )
    ap.add_argument("--out", default="runs/bench-overlap")
    args = ap.parse_args()
    out = Path(args.out)
    tree = tree_search(
        args.strategy,
        args.n,
        step_cut=args.step_cut,
        max_iterations=8 if args.step_cut == "sentence" else 6,
        tail_rows=args.tail_rows,
    )
    # name: (search, overlap)
    runs = {
        "best_of_n": (SearchConfig(strategy="best_of_n", n=args.n, max_tokens=160, step_cut=args.step_cut), 1),
        f"{args.strategy}, overlap 1": (tree, 1),
        f"{args.strategy}, overlap 2": (tree, 2),
    }
    if args.no_overlap:
        runs = dict(list(runs.items())[:2])
    if args.ablate:  # finished rows compacted at once; then also no joins, no PRM KV kept between calls
        for change in ("eager compaction", "none"):
            runs[f"best_of_n, {change}"] = (runs["best_of_n"][0], 1)
            runs[f"{args.strategy}, {change}"] = (tree, 1)
    if args.prompt_kv_per_row:
        runs["best_of_n, prompt KV per row"] = (runs["best_of_n"][0], 1)
        runs[f"{args.strategy}, prompt KV per row"] = (tree, 1)
    if args.kv_heads_copied:
        runs["best_of_n, KV heads copied"] = (runs["best_of_n"][0], 1)
        runs[f"{args.strategy}, KV heads copied"] = (tree, 1)
    base = GenerateConfig(
        pool=bench_pool(args.tasks, 1000, args.problems),
        prm=args.prm,
        problems_per_batch=args.problems_per_batch or max(args.problems // 2, 1),
        overwrite=True,  # timings: every run fresh (synth overwrites only run dirs it made)
    )
    policy, prm = load_policy(base), load_prm(args.prm)
    policy_joins, prm_kept, shares = policy.joins_rows, getattr(prm, "kept_bytes", None), policy.shares_prefix
    results, rows = {}, {}
    for name, (search, overlap) in runs.items():
        d = out / name.replace(", ", "-").replace(" ", "")
        cfg = dataclasses.replace(base, search=search, overlap=overlap, output_dir=str(d))
        policy.keeps_finished_rows = "compaction" not in name and "none" not in name
        policy.joins_rows = policy_joins and "none" not in name
        policy.shares_prefix = shares and "per row" not in name
        gqa_sdpa.SHARES_KV_HEADS = "heads copied" not in name
        if prm_kept is not None:  # a PRM that keeps KV between calls (ours)
            prm.kept_bytes = prm_kept if "none" not in name else 0
        results[name] = generate(cfg, policy=policy, prm=prm if search.strategy != "best_of_n" else None)
        rows[name] = Journal(d / "rows.jsonl").read()
    names = list(runs)
    bon = results["best_of_n"]["wall_s"]
    pool = " ".join(args.tasks) if args.tasks else "held-out arithmetic"
    print(
        f"\n{args.problems} {pool} problems, N={args.n}, {args.step_cut} steps, PRM {args.prm}, transformers "
        f"engines (batches of {base.problems_per_batch})\n"
    )
    print(
        "| run | wall s | policy s | PRM s | other s | generated tokens | policy ms / token | wall / best-of-N "
        "| wall / max(policy, PRM) | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in results.items():
        pol, prm_s = s.get("policy_s", 0.0), s.get("prm_s", 0.0)
        sel = f"weighted@{args.n}" if f"weighted@{args.n}" in s else f"maj@{args.n}"
        # the rest of the wall time: Python (tree bookkeeping, tokenizing, verification); overlapped runs hide it
        other = f"{max(s['wall_s'] - pol - prm_s, 0.0):.1f}" if runs[name][1] == 1 else "-"
        tokens = sum(r["generated_tokens"] for r in rows[name])
        print(
            f"| {name} | {s['wall_s']:.1f} | {pol:.1f} | {prm_s:.1f} | {other} | {tokens} | {1000 * pol / tokens:.2f} | "
            f"{s['wall_s'] / bon:.2f}x | "
            f"{s['wall_s'] / max(pol, prm_s, 1e-9):.2f}x | {s[sel]:.3f} ({sel.split('@')[0]}) |"
        )
    if args.no_overlap:
        return
    same = json.dumps(rows[names[1]], sort_keys=True) == json.dumps(rows[names[2]], sort_keys=True)
    seq, ovl = results[names[1]]["wall_s"], results[names[2]]["wall_s"]
    print(f"\noverlap 2 / overlap 1 wall: {ovl / seq:.2f}x; overlap 2 rows identical to overlap 1: {same}")


if __name__ == "__main__":
    main()
