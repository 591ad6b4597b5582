"""SFT settings for a self-improvement round, compared on a development pool (not the held-out one).

    python bench/sft_sweep.py [--run runs/rounds-smollm2] [--round 1] [--variants recipe lr5e-4 ...]

Retrains round k's SFT stage of a `synth rounds` run on the same SFT data with each variant of the
recipe's `sft:` settings, then evaluates every model greedily on a development pool: the rounds
run's eval pool task mix with another seed (--dev-seed), problems of the training pool removed.
The held-out pool of `synth rounds` and bench/rounds_eval.py stays untouched, so picking a variant
here does not tune on the numbers reported for the rounds. Finished trainings and evaluations are
reused: train subsets of --variants in parallel processes with --train-only, then run once with all of them
for the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import greedy_correct, paired_gain  # noqa: E402

from synth.config import from_dict, load_yaml, to_dict  # noqa: E402
from synth.filter.select import normalize  # noqa: E402
from synth.problems import load_pool  # noqa: E402
from synth.train.rounds import RoundsConfig  # noqa: E402
from synth.train.sft import TrainConfig, train_sft  # noqa: E402

# Overrides of the recipe's `sft:` settings; "recipe" is the run's own SFT model (not retrained).
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "lr5e-4": {"learning_rate": 5e-4},
    "epochs6": {"num_train_epochs": 6.0},
    "full-lr2e-5": {"lora": False, "learning_rate": 2e-5},
    "full-lr5e-5": {"lora": False, "learning_rate": 5e-5},
    "lora-r64": {"lora_r": 64, "lora_alpha": 128},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/rounds-smollm2")
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--dev-seed", type=int, default=3000)
    ap.add_argument("--problems", type=int, default=320, help="development pool size before removing training problems")
    ap.add_argument("--out", default="runs/bench-sft-sweep")
    ap.add_argument(
        "--train-only", action="store_true", help="train the variants, skip the evaluation (parallel lanes)"
    )
    args = ap.parse_args()

    run = Path(args.run)
    if not (run / "config.yaml").exists():
        sys.exit(f"not a `synth rounds` run dir (no config.yaml): {run}; run bench/rounds.py first")
    cfg = from_dict(RoundsConfig, load_yaml(run / "config.yaml"))
    rd = run / f"round-{args.round}"
    if not (rd / "sft_data" / "done.json").exists() or not (rd / "sft" / "final").exists():
        sys.exit(f"{rd} has no finished sft_data and sft stages: finish round {args.round} of that run first")
    if args.dev_seed in (cfg.eval_pool.seed, cfg.train_pool.seed):
        sys.exit(f"--dev-seed {args.dev_seed} is the seed of the run's eval or training pool: pick another")

    pool = dataclasses.replace(cfg.eval_pool, seed=args.dev_seed, num_problems=args.problems)
    seen = {normalize(p.problem) for p in load_pool(cfg.train_pool)}
    dev = [p for p in load_pool(pool) if normalize(p.problem) not in seen]
    keep = {p.id for p in dev}
    print(
        f"development pool: {args.problems} problems (seed {pool.seed}), {len(keep)} after removing training problems"
    )
    start = cfg.model if cfg.from_base or args.round == 1 else str(run / f"round-{args.round - 1}" / "sft" / "final")

    out = Path(args.out) / run.name / f"round-{args.round}"
    models = {"base": cfg.model}
    for name in args.variants:
        if name == "recipe":
            models[name] = str(rd / "sft" / "final")
            continue
        sft = from_dict(
            TrainConfig,
            {
                **to_dict(cfg.sft),
                **VARIANTS[name],
                "model": start,
                "dataset": str(rd / "sft_data"),
                "output_dir": str(out / name / "sft"),
                "resume": True,
            },
        )
        metrics = train_sft(sft)
        print(
            f"{name}: train_loss {metrics['train_loss']:.4f} eval_loss {metrics.get('eval_loss')} "
            f"train_runtime_s {metrics.get('train_runtime_s')}"
        )
        models[name] = str(out / name / "sft" / "final")
    if args.train_only:
        return

    correct = {
        name: greedy_correct(
            model,
            pool,
            out / name / "dev_greedy",
            keep,
            cfg.search.max_tokens,
            cfg.generate.batch_size,
            cfg.generate.seed,
        )
        for name, model in models.items()
    }

    print(
        f"\nround {args.round} of {run}: SFT variants, greedy accuracy on {len(keep)} development problems "
        "(gains paired over problems, ± one standard error)"
    )
    print("| variant | settings | greedy accuracy | gain over base | gain over the recipe's model |")
    print("|---|---|---|---|---|")

    def gain(name: str, ref: str) -> str:
        if ref not in correct or name == ref:
            return "-"
        return "{:+.1f} ± {:.1f} points".format(*paired_gain(correct[name], correct[ref], list(keep)))

    for name in models:
        acc = sum(correct[name].values()) / len(keep)
        settings = ", ".join(f"{k}={v}" for k, v in VARIANTS.get(name, {}).items()) or (
            "-" if name == "base" else "recipe"
        )
        print(
            f"| {name} | {settings} | {acc:.3f} | {gain(name, 'base')} | {gain(name, 'recipe') if name != 'base' else '-'} |"
        )


if __name__ == "__main__":
    main()
