"""A tree search's PRM calls, replayed: the PRM's passes over sequences on kept KV grouped by new length
against `batch_size` at a time in length order, on exactly the same calls.

    python bench/prm_replay.py [--problems 8] [--n 16] [--strategy dvts] [--tasks FAMILY ...]
        [--prm default-sentence] [--repeats 2] [--out runs/bench-prm-replay]

One `synth generate` run of the tree search (sentence steps, one batch; `--tasks`: those reasoning-gym
families at seed 1000, else the held-out arithmetic pool) records every `score` call the search makes.
Those calls are then replayed in order on the same PRM, each replay from a fresh search (nothing kept), once
per setting, alternating, `--repeats` times (so the machine's drift falls on both alike). Prints each
setting's PRM seconds (the best of its replays), tokens fed to the model (padding included), the ratio, and
the largest step-score difference between the two settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, tree_search  # noqa: E402

from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402

SETTINGS = {"passes by new length": True, "batch_size per pass": False}  # name -> chunks_by_length


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--strategy", default="dvts", choices=["beam_search", "dvts", "particle_filtering"])
    ap.add_argument("--tasks", nargs="+", help="reasoning-gym families instead of the held-out arithmetic pool")
    ap.add_argument("--prm", default="default-sentence")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-prm-replay")
    args = ap.parse_args()
    base = GenerateConfig(
        pool=bench_pool(args.tasks, 1000, args.problems),
        prm=args.prm,
        problems_per_batch=args.problems,
        search=tree_search(args.strategy, args.n),
        output_dir=args.out,
        overwrite=True,
    )
    policy, prm = load_policy(base), load_prm(args.prm)
    calls: list[tuple[list[str], list[list[str]]]] = []
    score = prm.score
    prm.score = lambda problems, steps: (
        calls.append((list(problems), [list(s) for s in steps])) or score(problems, steps)
    )
    generate(base, policy=policy, prm=prm)
    prm.score = score
    fed = {name: 0 for name in SETTINGS}
    forward = prm.model.forward
    current = [None]

    def counted(**kw):
        fed[current[0]] += kw["input_ids"].numel()
        return forward(**kw)

    prm.model.forward = counted
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    scores: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, by_length in SETTINGS.items():
            prm.chunks_by_length, current[0] = by_length, name
            fed[name] = 0
            prm.new_search()
            start = time.perf_counter()
            scores[name] = [prm.score(p, s) for p, s in calls]
            seconds[name].append(time.perf_counter() - start)
    prm.model.forward = forward
    a, b = SETTINGS
    diff = max(
        (abs(x - y) for ca, cb in zip(scores[a], scores[b]) for ra, rb in zip(ca, cb) for x, y in zip(ra, rb)),
        default=0.0,
    )
    steps = sum(len(s) for _, ss in calls for s in ss)
    pool = " ".join(args.tasks) if args.tasks else "held-out arithmetic"
    print(
        f"\n{args.strategy} N={args.n} on {args.problems} {pool} problems: {len(calls)} PRM calls, {steps} step "
        f"scores, replayed {args.repeats}x per setting, alternating\n"
    )
    print("| PRM passes on kept KV | PRM s (best of replays) | tokens fed | steps / s |")
    print("|---|---|---|---|")
    for name in SETTINGS:
        best = min(seconds[name])
        print(f"| {name} | {best:.1f} | {fed[name]} | {steps / best:.0f} |")
    print(
        f"\n{b} / {a}: {min(seconds[b]) / min(seconds[a]):.2f}x the time, {fed[b] / fed[a]:.2f}x the tokens; "
        f"largest step-score difference {diff:.2g}"
    )


if __name__ == "__main__":
    main()
