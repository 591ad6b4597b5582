"""Held-out greedy accuracy of each round's model on a larger pool than the rounds run evaluates on.

    python bench/rounds_eval.py [--runs runs/rounds-smollm2 runs/rounds-smollm2-256] [--problems 320]

`synth rounds` evaluates on 64 held-out problems (one problem = 1.6 points, standard error ~6 points).
This re-evaluates the base model and every round's SFT model of the given runs greedily on a larger
pool of the held-out seed, with every problem that also occurs in a run's training pool removed, and
prints accuracy and the gain over the base model per round, with its standard error (paired over problems).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.config import from_dict, load_yaml  # noqa: E402
from synth.filter.select import normalize  # noqa: E402
from synth.generate.run import GenerateConfig, generate  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.problems import load_pool  # noqa: E402
from synth.train.rounds import RoundsConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["runs/rounds-smollm2", "runs/rounds-smollm2-256"])
    ap.add_argument("--problems", type=int, default=320, help="held-out pool size before removing training problems")
    ap.add_argument("--out", default="runs/bench-rounds-eval")
    args = ap.parse_args()

    missing = [r for r in args.runs if not (Path(r) / "config.yaml").exists()]
    if missing:
        sys.exit(f"not a `synth rounds` run dir (no config.yaml): {', '.join(missing)}; run bench/rounds.py "
                 "(--config configs/rounds-smollm2-256.yaml for the second default) first, or pass --runs")
    runs = [(Path(r), from_dict(RoundsConfig, load_yaml(Path(r) / "config.yaml"))) for r in args.runs]
    first = runs[0][1]
    pool = dataclasses.replace(first.eval_pool, num_problems=args.problems)
    seen = {normalize(p.problem) for _, cfg in runs for p in load_pool(cfg.train_pool)}
    held_out = [p for p in load_pool(pool) if normalize(p.problem) not in seen]
    keep = {p.id for p in held_out}
    print(f"held-out pool: {args.problems} problems (seed {pool.seed}), {len(held_out)} after removing training problems")

    models = [("base", first.model)]
    for run, cfg in runs:
        for k in range(1, cfg.rounds + 1):
            final = run / f"round-{k}" / "sft" / "final"
            if final.exists():
                models.append((f"{run.name} round {k}", str(final)))
    greedy = SearchConfig(strategy="best_of_n", n=1, temperature=0.0, max_tokens=first.search.max_tokens)
    correct: dict[str, dict[str, bool]] = {}
    for name, model in models:
        out = Path(args.out) / name.replace(" ", "-")
        cfg = GenerateConfig(model=model, pool=pool, search=greedy, output_dir=str(out), resume=True,
                             problems_per_batch=64, batch_size=first.batch_size, seed=first.seed)
        generate(cfg)
        correct[name] = {r["id"]: bool(r["verified"][0]) for r in Journal(out / "rows.jsonl").read() if r["id"] in keep}

    base = correct["base"]
    print(f"\n| model | greedy accuracy ({len(keep)} problems) | gain over base | standard error of the gain |")
    print("|---|---|---|---|")
    for name, _ in models:
        acc = sum(correct[name].values()) / len(keep)
        diffs = [int(correct[name][i]) - int(base[i]) for i in keep]
        mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
        print(f"| {name} | {acc:.3f} | {mean * 100:+.1f} points | {se * 100:.1f} |")


if __name__ == "__main__":
    main()
