"""Step labels read off search trees (no rollouts) against Monte-Carlo labels of the same steps.

    python bench/tree_labels.py [--problems 32] [--seed 1000] [--strategy dvts] [--n 16] [--rollouts 4]
        [--traces-per-problem 4] [--min-support 2] [--prm default-sentence] [--out runs/bench-tree-labels]

1. the strategy searches a held-out pool (sentence steps, the PRM given; reused when --out has the run);
2. `synth label --method trees` labels its final traces' steps from the tree (0 rollouts);
3. the same traces' same intermediate steps get Monte-Carlo labels (K rollouts each, `synth label`'s
   label_batch), at most --traces-per-problem traces per problem;
4. prints the AUROC of the tree labels against the MC hard labels (pooled and within problems), the rollouts
   each needed, and how many steps each labelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import held_out_pool, tree_search  # noqa: E402

from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.hub import read_rows  # noqa: E402
from synth.prm.evaluate import within_group_auroc  # noqa: E402
from synth.prm.label import LabelConfig, label_batch  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402
from synth.prm.tree_labels import tree_label_rows  # noqa: E402
from synth.records import Problem  # noqa: E402
from synth.steps import StepRule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--strategy", default="dvts", choices=["beam_search", "dvts", "particle_filtering", "mcts"])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--traces-per-problem", type=int, default=4)
    ap.add_argument("--min-support", type=int, default=2)
    ap.add_argument("--prm", default="default-sentence")
    ap.add_argument("--out", default="runs/bench-tree-labels")
    args = ap.parse_args()
    out = Path(args.out) / f"{args.strategy}-n{args.n}-seed{args.seed}"
    rule = StepRule("sentence")
    search = tree_search(args.strategy, args.n)
    cfg = GenerateConfig(
        output_dir=str(out),
        prm=args.prm,
        problems_per_batch=16,
        search=search,
        pool=held_out_pool(args.seed, args.problems),
    )
    policy = load_policy(cfg)
    t = time.perf_counter()
    if not (out / "summary.json").exists():
        generate(cfg, policy=policy, prm=load_prm(args.prm))
    search_s = time.perf_counter() - t
    rows = read_rows(out)
    by_id = {r["id"]: r for r in rows}
    tree_rows = tree_label_rows(rows, args.min_support, "sentence")

    # MC labels of the same traces (at most --traces-per-problem per problem), on their intermediate steps
    chosen, per_problem = [], {}
    for tr in tree_rows:
        if len(tr["completions"]) < 2 or per_problem.get(tr["problem_id"], 0) >= args.traces_per_problem:
            continue
        per_problem[tr["problem_id"]] = per_problem.get(tr["problem_id"], 0) + 1
        row, i = by_id[tr["problem_id"]], int(tr["id"].split("#")[1])
        pairs = rule.cut_text(row["completions"][i])
        if [s for _, s in pairs][: len(tr["completions"])] != tr["completions"][: len(pairs)]:
            continue  # a path that does not spell its completion's steps back (should not happen)
        problem = Problem(
            row["id"], row["problem"], row["gold_answer"], row["source"], json.loads(row["metadata"] or "{}")
        )
        chosen.append(
            (
                tr,
                {
                    "key": tr["id"],
                    "problem": problem,
                    "steps": [s for _, s in pairs],
                    "pieces": [rule.piece(lead, s) for lead, s in pairs],
                    "verified": bool(row["verified"][i]),
                },
            )
        )
    label_cfg = LabelConfig(rollouts=args.rollouts, max_tokens=160, temperature=0.8, step_cut="sentence")
    t = time.perf_counter()
    mc_rows = []
    for start in range(0, len(chosen), 16):
        new, _ = label_batch(policy, [it for _, it in chosen[start : start + 16]], label_cfg, start)
        mc_rows += new
    mc_s = time.perf_counter() - t

    tree_scores, mc_truth, groups, mc_rollouts = [], [], [], 0
    for (tr, _), mc in zip(chosen, mc_rows):
        k = len(tr["completions"]) - 1 if tr["support"][-1] == 1 else len(tr["completions"])  # intermediate steps
        k = min(k, len(mc["completions"]) - 1)
        tree_scores += tr["soft_labels"][:k]
        mc_truth += mc["labels"][:k]
        groups += [tr["problem_id"]] * k
        mc_rollouts += args.rollouts * (len(mc["completions"]) - 1)
    from sklearn.metrics import roc_auc_score

    positives = sum(mc_truth)
    pooled = roc_auc_score(mc_truth, tree_scores) if 0 < positives < len(mc_truth) else float("nan")
    within, pairs = within_group_auroc(groups, tree_scores, mc_truth)
    intermediate_tree = sum(len(r["completions"]) - 1 for r in tree_rows)
    print(
        f"\n{args.strategy} N={args.n}, {len(rows)} held-out problems (seed {args.seed}), sentence steps, PRM {args.prm}"
        f" (search {search_s:.0f} s; MC labels {mc_s:.0f} s)\n"
    )
    print("| labels | rollouts | intermediate steps labelled | rollouts per labelled step |")
    print("|---|---|---|---|")
    print(f"| from the trees (min support {args.min_support}) | 0 | {intermediate_tree} | 0 |")
    print(
        f"| Monte-Carlo, K={args.rollouts}, {len(chosen)} of those traces | {mc_rollouts} | {len(mc_truth)} | "
        f"{mc_rollouts / max(len(mc_truth), 1):.1f} |"
    )
    print(
        f"\nagreement on {len(mc_truth)} shared steps ({positives} MC-positive): AUROC of tree labels vs MC hard labels "
        f"{pooled:.3f} pooled, {within:.3f} within problems ({pairs} pairs)"
    )


if __name__ == "__main__":
    main()
