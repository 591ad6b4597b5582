"""Binary-search step labels (OmegaPRM) against per-step Monte-Carlo labels of the same traces.

    python bench/label_methods.py [--problems 48] [--seed 3000] [--n 8] [--rollouts 4]
        [--traces-per-problem 4] [--step-cut sentence] [--out runs/bench-label-methods]

1. best-of-N with the bundled SmolLM2 on a held-out pool (reused when --out has the run);
2. `synth label`'s trace choice (verified and wrong alternating, at most --traces-per-problem per problem);
3. the same traces labelled three times: `--method mc` twice (two rollout seeds: how well MC agrees with
   itself, the noise floor) and `--method binary` once;
4. prints rollouts per labelled step and wall time of each, and the agreement of hard labels with the first
   MC pass over every non-final step (± SE clustered by trace), for the binary labels and for the second MC
   pass, and how often the first wrong step is the same.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import held_out_pool  # noqa: E402

from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.hub import read_rows  # noqa: E402
from synth.prm.label import LabelConfig, label_batch, label_stats, pick_traces  # noqa: E402
from synth.steps import StepRule  # noqa: E402


def label_all(policy, items: list[dict], cfg: LabelConfig, seed: int) -> tuple[list[dict], float]:
    """Rows for every item in batches of 16 (as `synth label` runs them), and the wall time."""
    t, rows = time.perf_counter(), []
    for start in range(0, len(items), 16):
        new, _ = label_batch(policy, items[start : start + 16], cfg, seed + start)
        rows += new
    return rows, time.perf_counter() - t


def agreement(reference: list[dict], other: list[dict]) -> tuple[float, float, int]:
    """Share of non-final steps whose hard label matches the reference, its SE clustered by trace, steps."""
    per_trace = [
        (sum(a == b for a, b in zip(r["labels"][:-1], o["labels"][:-1])), len(r["labels"]) - 1)
        for r, o in zip(reference, other)
        if len(r["labels"]) > 1
    ]
    hits, steps = sum(h for h, _ in per_trace), sum(n for _, n in per_trace)
    p = hits / max(steps, 1)
    # cluster-robust SE of a ratio mean: sqrt(sum (h_i - p n_i)^2) / sum n_i
    se = math.sqrt(sum((h - p * n) ** 2 for h, n in per_trace)) / max(steps, 1)
    return p, se, steps


def first_wrong(row: dict) -> int:
    return next((k for k, ok in enumerate(row["labels"]) if not ok), len(row["labels"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--traces-per-problem", type=int, default=4)
    ap.add_argument("--step-cut", default="sentence", choices=["delimiter", "sentence"])
    ap.add_argument("--out", default="runs/bench-label-methods")
    args = ap.parse_args()
    out = Path(args.out) / f"bon{args.n}-seed{args.seed}"
    cfg = GenerateConfig(
        output_dir=str(out),
        problems_per_batch=16,
        search=SearchConfig(strategy="best_of_n", n=args.n, max_tokens=160),
        pool=held_out_pool(args.seed, args.problems),
    )
    policy = load_policy(cfg)
    if not (out / "summary.json").exists():
        generate(cfg, policy=policy)
    items = pick_traces(read_rows(out), args.traces_per_problem, 12, 0, StepRule(args.step_cut))
    label_cfg = dict(rollouts=args.rollouts, max_tokens=160, temperature=0.8, step_cut=args.step_cut)
    mc, mc_s = label_all(policy, items, LabelConfig(**label_cfg), 0)
    mc2, mc2_s = label_all(policy, items, LabelConfig(**label_cfg), 10_000)
    binary, binary_s = label_all(policy, items, LabelConfig(**label_cfg, method="binary"), 0)

    wrong = [j for j, it in enumerate(items) if not it["verified"] and len(it["steps"]) > 1]
    steps = sum(len(it["steps"]) for it in items)
    print(
        f"\n{len(items)} best-of-{args.n} traces ({len(wrong)} wrong with 2+ steps) of {args.problems} held-out problems "
        f"(seed {args.seed}), {args.step_cut} steps ({steps} in all), K={args.rollouts}\n"
    )
    print("| labels | rollouts per labelled step | wall s | hard-label agreement with MC | same first wrong step |")
    print("|---|---|---|---|---|")
    mc_cost = label_stats(mc)["rollouts_per_labelled_step"]
    print(f"| Monte-Carlo (reference) | {mc_cost:.2f} | {mc_s:.0f} | 1 | 1 |")
    for name, rows, secs in [("Monte-Carlo, other seed", mc2, mc2_s), ("binary search", binary, binary_s)]:
        p, se, n = agreement(mc, rows)
        same = sum(first_wrong(mc[j]) == first_wrong(rows[j]) for j in wrong) / max(len(wrong), 1)
        cost = label_stats(rows)["rollouts_per_labelled_step"]
        print(f"| {name} | {cost:.2f} | {secs:.0f} | {p:.3f} ± {se:.3f} ({n} steps) | {same:.3f} ({len(wrong)}) |")
    cost = label_stats(binary)["rollouts_per_labelled_step"]
    print(
        f"\nbinary search: {mc_cost / max(cost, 1e-9):.2f}x fewer rollouts per labelled step, "
        f"{mc_s / max(binary_s, 1e-9):.2f}x less wall time than per-step MC"
    )


if __name__ == "__main__":
    main()
