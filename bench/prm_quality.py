"""Quality of a PRM on a held-out reasoning-gym pool (a different seed than the PRM was trained on).

    python bench/prm_quality.py [--problems 32] [--n 16] [--prm default] [--out runs/bench-prm-quality]
        [--step-cut delimiter|sentence] [--tasks FAMILY ...] [--seed 1000] [--pool RECIPE:NAME]

1. best-of-N (N=16) with the bundled SmolLM2; every completion is then scored by the PRM under test
   (samples and labels do not depend on the PRM, so PRMs are compared on the same samples);
2. Monte-Carlo step labels (K rollouts per step prefix) for a few traces per problem, exactly as
   `synth label` makes them;
3. prints how much the true values of one problem's steps differ (label spread, rollout noise removed),
   step AUROC against those labels (pooled, and within problems for partial and final steps:
   tree search ranks siblings of one problem), trace AUROC (PRM score vs verified answer over all
   completions), weighted@N and naive@N vs maj@N on the same samples, and the label cost;
4. with --tasks (reasoning-gym families at their own difficulty instead of the 1-2 digit arithmetic pool)
   or --pool (a pool of a rounds recipe, e.g. configs/rounds-smollm2-broad.yaml:ood), a table per family: weighted@N - maj@N (paired over its problems, ± SE) and step AUROC.
Stages are cached in --out (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, paired_gain  # noqa: E402

from synth.evaluate import summarize  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm.evaluate import family, step_auroc, within_problem_value_spread  # noqa: E402
from synth.prm.label import LabelConfig, label  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402
from synth.prm.rescore import rescore_rows  # noqa: E402
from synth.problems import PoolConfig  # noqa: E402
from synth.steps import StepRule  # noqa: E402


def trace_auroc(rows: list[dict]) -> tuple[float, float, int]:
    """AUROC of each finished completion's aggregated PRM score against its verified flag: pooled, and
    within problems (a right and a wrong completion of one problem: what the final pick ranks), with
    the number of within-problem pairs."""
    from sklearn.metrics import roc_auc_score

    from synth.prm.evaluate import within_group_auroc

    groups, scores, truth = [], [], []
    for r in rows:
        for s, ok, done in zip(r["scores"] or [], r["verified"], r["finished"]):
            if done and s is not None:
                groups.append(r["id"])
                scores.append(s)
                truth.append(bool(ok))
    pooled = roc_auc_score(truth, scores) if 0 < sum(truth) < len(truth) else float("nan")
    return (pooled, *within_group_auroc(groups, scores, truth))


def recipe_pool(spec: str) -> PoolConfig:
    """`configs/rounds-smollm2-broad.yaml:ood` -> that recipe's eval pool `ood` (`train_pool` names the training pool)."""
    from synth.config import from_dict, load_yaml
    from synth.train.rounds import RoundsConfig

    recipe, _, name = spec.rpartition(":")
    if not recipe:
        sys.exit(f"--pool {spec}: give RECIPE:NAME, e.g. configs/rounds-smollm2-broad.yaml:ood")
    cfg = from_dict(RoundsConfig, load_yaml(recipe))
    pools = {"train_pool": cfg.train_pool, **cfg.pools}
    if name not in pools:
        sys.exit(f"--pool {spec}: {recipe} has no pool {name!r} (it has: {', '.join(pools)})")
    return pools[name]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--prm", default="default")
    ap.add_argument(
        "--prm-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="dtype the PRM scores in (auto: bf16 where the hardware has native bf16)",
    )
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--traces-per-problem", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-prm-quality")
    ap.add_argument("--tasks", nargs="+", help="reasoning-gym families (default: the 1-2 digit arithmetic pool)")
    ap.add_argument("--seed", type=int, default=1000, help="pool seed")
    ap.add_argument(
        "--pool",
        default=None,
        help="RECIPE:NAME: the eval pool NAME of a rounds recipe (or train_pool), settings and seed included",
    )
    ap.add_argument(
        "--step-cut",
        default="delimiter",
        choices=["delimiter", "sentence"],
        help="steps the PRM scores and the labels use ('\\n\\n' paragraphs or sentences; labels in OUT/labels[-sentence])",
    )
    args = ap.parse_args()

    out = Path(args.out)
    if args.pool:
        pool = recipe_pool(args.pool)
    else:
        pool = bench_pool(args.tasks, args.seed, args.problems)
    gen_cfg = GenerateConfig(
        pool=pool,
        prm=None,
        output_dir=str(out / "traces"),
        problems_per_batch=8,
        search=SearchConfig(strategy="best_of_n", n=args.n, temperature=0.8, max_tokens=160),
    )
    policy, prm = load_policy(gen_cfg), load_prm(args.prm, dtype=args.prm_dtype)
    if not (out / "traces" / "summary.json").exists():
        gen_cfg.resume = (out / "traces" / "rows.jsonl").exists()
        generate(gen_cfg, policy=policy)
    # The traces' steps were cut at "\n\n" when generated: StepRule("delimiter") cuts them the same way again.
    rows = rescore_rows(Journal(out / "traces" / "rows.jsonl").read(), prm, steps=StepRule(args.step_cut))
    summary = summarize(rows)

    suffix = (
        "" if args.step_cut == "delimiter" else f"-{args.step_cut}"
    )  # sentence labels and results sit beside the others
    label_dir = out / f"labels{suffix}"
    if not (label_dir / "summary.json").exists():
        label(
            LabelConfig(
                dataset=str(out / "traces"),
                rollouts=args.rollouts,
                max_tokens=80,
                traces_per_problem=args.traces_per_problem,
                max_steps=4 if args.step_cut == "delimiter" else 8,
                step_cut=args.step_cut,
                output_dir=str(label_dir),
                resume=(label_dir / "rows.jsonl").exists(),
                seed=1,
            ),
            policy=policy,
        )
    label_stats = json.loads((label_dir / "summary.json").read_text())
    from datasets import Dataset

    label_rows = Journal(label_dir / "rows.jsonl").read()
    steps = step_auroc(prm, Dataset.from_list(label_rows))
    spread = within_problem_value_spread(label_rows)

    n = args.n
    print(
        f"\nPRM '{args.prm}' on {pool.num_problems} held-out problems (reasoning-gym seed {pool.seed}), SmolLM2-135M best-of-{n}, "
        f"steps cut at {args.step_cut}"
    )
    print(
        f"step AUROC (MC labels, K={args.rollouts}, {steps['eval_steps']} steps, "
        f"{steps['eval_positive_rate']:.2f} positive): {steps['step_auroc']:.3f}"
    )
    print(
        f"within-problem step AUROC (a good and a bad step of one problem; what tree search ranks): "
        f"all {steps['within_problem_auroc']:.3f} ({steps['within_problem_pairs']} pairs) | "
        f"partial steps {steps['within_problem_auroc_partial']:.3f} ({steps['within_problem_pairs_partial']}) | "
        f"final steps {steps['within_problem_auroc_final']:.3f} ({steps['within_problem_pairs_final']})"
    )
    print(
        f"value spread within a problem (sd of step labels, rollout noise removed; the most any ranking of "
        f"siblings can exploit): partial steps {spread['partial_sd']:.3f} ({spread['partial_problems']} problems) | "
        f"final steps {spread['final_sd']:.3f} ({spread['final_problems']})"
    )
    traces = trace_auroc(rows)
    print(
        f"trace AUROC (score vs verified answer, all finished completions): {traces[0]:.3f} pooled | "
        f"{traces[1]:.3f} within problems ({traces[2]} pairs)"
    )
    majority = {r["id"]: bool(r["majority_verified"]) for r in rows}
    gain, se = paired_gain({r["id"]: bool(r["weighted_verified"]) for r in rows}, majority, list(majority))
    print(
        f"maj@{n} {summary[f'maj@{n}']:.3f} | naive@{n} {summary[f'naive@{n}']:.3f} | "
        f"weighted@{n} {summary[f'weighted@{n}']:.3f} | pass@{n} {summary[f'pass@{n}']:.3f} | "
        f"weighted - maj = {gain:+.1f} ± {se:.1f} points (paired)"
    )
    print(
        f"label cost: {label_stats['rollouts_per_labelled_step']:.2f} rollouts per labelled step, "
        f"{label_stats['seconds_per_100_steps']} s per 100 steps"
    )
    by_family: dict[str, list[dict]] = {}
    for r in rows:
        by_family.setdefault(family(r["source"]), []).append(r)
    if len(by_family) > 1:
        print(f"\n| family | problems | maj@{n} | weighted@{n} | weighted - maj (points) | pass@{n} | step AUROC |")
        print("|---|---|---|---|---|---|---|")
        for name, fam_rows in sorted(by_family.items()):
            maj = {r["id"]: bool(r["majority_verified"]) for r in fam_rows}
            weighted = {r["id"]: bool(r["weighted_verified"]) for r in fam_rows}
            gain, se = paired_gain(weighted, maj, list(maj)) if len(maj) > 1 else (float("nan"), float("nan"))
            auroc = steps.get("families", {}).get(name, {}).get("step_auroc", float("nan"))
            print(
                f"| {name} | {len(fam_rows)} | {sum(maj.values()) / len(maj):.3f} | "
                f"{sum(weighted.values()) / len(maj):.3f} | {gain:+.1f} ± {se:.1f} | "
                f"{sum(any(r['verified']) for r in fam_rows) / len(maj):.3f} | {auroc:.3f} |"
            )
    result = {
        "step": steps,
        "value_spread": spread,
        "trace_auroc": traces[0],
        "trace_auroc_within_problem": traces[1],
        "summary": summary,
        "label": label_stats,
    }
    (out / f"result{suffix}.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
