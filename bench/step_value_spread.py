"""How much one problem's partial steps differ in value when completions are cut into paragraphs
(the default "\\n\\n" step delimiter) or into sentences: is there anything for tree search to rank?

    python bench/step_value_spread.py [--traces runs/bench-prm-quality-64-v3/traces] [--traces-per-problem 2]

Takes the best-of-N traces of `bench/prm_quality.py` (held-out seed 1000), picks the same traces for both
cuts, labels every partial step prefix with Monte-Carlo rollouts as `synth label` does (K rollouts,
verified against the gold answer; the prefix is the completion's own text up to the cut) and prints the
within-problem value spread (sd of the labels, rollout noise removed) of partial and final steps, the
steps per trace and the rollout cost. Labels (and their cost) are cached in --out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.generate.run import GenerateConfig, load_policy  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm.evaluate import within_problem_value_spread  # noqa: E402
from synth.prm.label import LabelConfig, label_batch, pick_traces  # noqa: E402

CUTS = {"paragraph": r"(\n\n+)", "sentence": r"((?<=[.!?])[ \t]+|\n+)"}


def cut(text: str, how: str) -> list[str]:
    """Steps that concatenate back to `text` exactly: each keeps the separator that ends it."""
    parts = re.split(CUTS[how], text)
    steps = [body + sep for body, sep in zip(parts[0::2], parts[1::2] + [""])]
    out: list[str] = []
    for step in steps:
        if out and not step.strip():
            out[-1] += step
        elif step.strip():
            out.append(step)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default="runs/bench-prm-quality-64-v3/traces", help="a `synth generate` output dir")
    ap.add_argument("--traces-per-problem", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--out", default="runs/bench-step-value-spread")
    args = ap.parse_args()

    rows = Journal(Path(args.traces) / "rows.jsonl").read()
    if not rows:
        sys.exit(f"{args.traces}: no rows (run bench/prm_quality.py first, or pass a `synth generate` output dir)")
    cfg = LabelConfig(rollouts=args.rollouts, max_tokens=80, seed=1)
    picked = pick_traces(rows, args.traces_per_problem, max_steps=10**6, seed=cfg.seed)
    by_id = {r["id"]: r for r in rows}
    policy = None
    for how in CUTS:
        journal = Journal(Path(args.out) / how / "rows.jsonl")
        done = {r["id"] for r in journal.read()}
        items = []
        for it in picked:
            row_id, i = it["key"].rsplit("#", 1)
            text = by_id[row_id]["completions"][int(i)]
            pieces = cut(text, how)  # this bench's pieces keep their whitespace: steps and prefix text alike
            items.append({**it, "steps": pieces, "pieces": pieces})
        todo = [it for it in items if it["key"] not in done]
        cost_file = Path(args.out) / how / "cost.json"  # rollout cost of every run that labelled these traces
        cost = json.loads(cost_file.read_text()) if cost_file.exists() else {"tokens": 0, "seconds": 0.0}
        started = time.perf_counter()
        for start in range(0, len(todo), 16):
            if policy is None:
                policy = load_policy(GenerateConfig())
            new, n = label_batch(policy, todo[start : start + 16], cfg, cfg.seed + start)
            journal.append(new)
            cost["tokens"] += n
        cost["seconds"] += time.perf_counter() - started if todo else 0.0
        cost_file.write_text(json.dumps(cost))
        labelled = journal.read()
        spread = within_problem_value_spread(labelled)
        steps = [len(r["completions"]) for r in labelled]
        print(
            f"{how:9s}: {len(labelled)} traces, {sum(steps) / len(steps):.2f} steps per trace | value spread within a problem: "
            f"partial steps {spread['partial_sd']:.3f} ({spread['partial_problems']} problems) | final steps "
            f"{spread['final_sd']:.3f} ({spread['final_problems']}) | {cost['tokens']} rollout tokens in {cost['seconds']:.0f} s"
        )
        (Path(args.out) / how / "spread.json").write_text(json.dumps(spread, indent=2))


if __name__ == "__main__":
    main()
