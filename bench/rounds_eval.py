"""Held-out greedy accuracy of each round's model on a larger pool than the rounds run evaluates on.

    python bench/rounds_eval.py [--runs runs/rounds-smollm2 runs/rounds-smollm2-256] [--problems 320] [--seeds 1000 3000]

`synth rounds` evaluates on 64 held-out problems (one problem = 1.6 points, standard error ~6 points).
This re-evaluates the base model and every round's SFT model of the given runs greedily on a larger
pool of the held-out seed (and of further seeds: --seeds), with every problem that also occurs in a run's
training pool removed (and repeats across seeds kept once), and prints accuracy and the gain over the base
model per round, per seed and over all of them, with its standard error (paired over problems).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import greedy_correct, paired_gain  # noqa: E402

from synth.config import from_dict, load_yaml  # noqa: E402
from synth.filter.select import normalize  # noqa: E402
from synth.problems import load_pool  # noqa: E402
from synth.train.rounds import RoundsConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["runs/rounds-smollm2", "runs/rounds-smollm2-256"])
    ap.add_argument("--problems", type=int, default=320, help="held-out pool size before removing training problems")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="held-out pool seeds (default: the run's eval seed)"
    )
    ap.add_argument("--out", default="runs/bench-rounds-eval")
    args = ap.parse_args()

    missing = [r for r in args.runs if not (Path(r) / "config.yaml").exists()]
    if missing:
        sys.exit(
            f"not a `synth rounds` run dir (no config.yaml): {', '.join(missing)}; run bench/rounds.py "
            "(--config configs/rounds-smollm2-256.yaml for the second default) first, or pass --runs"
        )
    runs = [(Path(r), from_dict(RoundsConfig, load_yaml(Path(r) / "config.yaml"))) for r in args.runs]
    first = runs[0][1]
    seeds = args.seeds or [first.eval_pool.seed]
    train_seeds = {cfg.train_pool.seed for _, cfg in runs}
    if train_seeds & set(seeds):
        sys.exit(f"--seeds {sorted(train_seeds & set(seeds))}: that is a training pool seed")
    seen = {normalize(p.problem) for _, cfg in runs for p in load_pool(cfg.train_pool)}
    pools, keep = {}, {}  # seed -> pool config; seed -> ids of its held-out problems
    for seed in seeds:
        pools[seed] = dataclasses.replace(first.eval_pool, seed=seed, num_problems=args.problems)
        held_out = []
        for p in load_pool(pools[seed]):
            if normalize(p.problem) not in seen:
                seen.add(normalize(p.problem))
                held_out.append(p.id)
        keep[seed] = set(held_out)
        print(
            f"held-out pool: {args.problems} problems (seed {seed}), {len(held_out)} after removing training "
            "problems (and problems of an earlier seed)"
        )

    models = [("base", first.model)]
    for run, cfg in runs:
        for k in range(1, cfg.rounds + 1):
            final = run / f"round-{k}" / "sft" / "final"
            if final.exists():
                models.append((f"{run.name} round {k}", str(final)))
    correct: dict[str, dict[tuple[int, str], bool]] = {name: {} for name, _ in models}
    for seed in seeds:
        for name, model in models:
            out = Path(args.out) / ("" if seed == first.eval_pool.seed else f"seed-{seed}") / name.replace(" ", "-")
            ok = greedy_correct(
                model,
                pools[seed],
                out,
                keep[seed],
                first.search.max_tokens,
                first.generate.batch_size,
                first.generate.seed,
            )
            correct[name].update({(seed, i): v for i, v in ok.items()})

    def row(name: str, ids: list) -> str:
        acc = sum(correct[name][i] for i in ids) / len(ids)
        return "{:.3f} | {:+.1f} ± {:.1f}".format(acc, *paired_gain(correct[name], correct["base"], ids))

    groups = [(f"seed {s}", [(s, i) for i in sorted(keep[s])]) for s in seeds]
    if len(seeds) > 1:
        groups.append(("all seeds", [i for _, ids in groups for i in ids]))
    print("\ngreedy accuracy | gain over the base model in points ± one standard error (paired over problems)")
    print("| model | " + " | ".join(f"{g} ({len(ids)} problems) | gain" for g, ids in groups) + " |")
    print("|---|" + "---|---|" * len(groups))
    for name, _ in models:
        print(f"| {name} | " + " | ".join(row(name, ids) for _, ids in groups) + " |")


if __name__ == "__main__":
    main()
