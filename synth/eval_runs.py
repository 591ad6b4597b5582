"""`synth eval`: accuracy-vs-N curves of one or more generate runs, a plot, and the compute-optimal mix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from synth.evaluate import (EvalError, accuracy_by_bucket, accuracy_curves, compute_optimal, curves_table, difficulty_buckets,
                            first_n_reaching, plot_curves, resolve_difficulty)
from synth.journal import Journal


@dataclass
class EvalConfig:
    runs: list[str] = field(default_factory=list, metadata={"help": "Output dirs of `synth generate` runs (same pool), e.g. one per strategy."})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where eval.md, eval.json and accuracy_vs_n.png go."})
    samples: int = field(default=16, metadata={"help": "Random subsets per N when subsampling completions."})
    reference: str = field(default="best_of_n", metadata={"help": "Strategy whose accuracy at its largest N the others must reach."})
    selector: Literal["majority", "naive", "weighted"] = field(
        default="weighted", metadata={"help": "Selector used for the compute-optimal mix (majority, naive, weighted)."})
    difficulty: Literal["auto", "pool", "prm", "oracle"] = field(default="auto", metadata={"help": (
        "Difficulty estimate for the buckets: pool, prm (mean PRM score, known without gold answers), oracle (pass@1), "
        "auto (pool if it has enough levels, else prm, else oracle).")})
    buckets: int = field(default=3, metadata={"help": "Difficulty buckets."})
    folds: int = field(default=5, metadata={"help": "Folds for the cross-fitted compute-optimal accuracy."})

    def __post_init__(self):
        if self.buckets < 1 or self.folds < 1 or self.samples < 1:
            raise ValueError(f"buckets ({self.buckets}), folds ({self.folds}) and samples ({self.samples}) must be >= 1")


def run_label(run_dir: Path, rows: list[dict]) -> str:
    strategy = rows[0]["strategy"] if rows else run_dir.name
    return f"{strategy}" if strategy else run_dir.name


def load_rows(run_dir: str | Path) -> list[dict]:
    rows = Journal(Path(run_dir) / "rows.jsonl").read()
    if not rows:
        raise EvalError(f"{run_dir}: no rows (is it a `synth generate` output dir?)")
    return rows


def evaluate_runs(cfg: EvalConfig) -> dict:
    if not cfg.runs:
        raise EvalError("eval needs --runs: one or more `synth generate` output dirs")
    results: dict[str, list[dict]] = {}
    for run in cfg.runs:
        rows = load_rows(run)
        name = run_label(Path(run), rows)
        if name in results:
            name = f"{name} ({Path(run).name})"
        results[name] = rows
    curves = {name: accuracy_curves(rows, cfg.samples) for name, rows in results.items()}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "accuracy_vs_n.png")
    report = {"curves": {k: {h: {str(n): a for n, a in c.items()} for h, c in v.items()} for k, v in curves.items()}}
    lines = ["# synth eval", "", curves_table(curves), "", "![accuracy vs N](accuracy_vs_n.png)", ""]
    ref = next((k for k in curves if k.startswith(cfg.reference)), None)
    if ref:
        selector = cfg.selector if cfg.selector in curves[ref] else "majority"
        ref_curve = curves[ref][selector]
        n_ref = max(ref_curve)
        target = ref_curve[n_ref]
        reach = {k: first_n_reaching(v.get(selector) or v["majority"], target) for k, v in curves.items()}
        report["reach"] = {"target": target, "reference_n": n_ref, "selector": selector, "first_n": reach}
        lines += [f"N at which each strategy first reaches {ref} {selector}@{n_ref} = {target:.3f}:", ""]
        lines += [f"- {k}: {v if v is not None else 'not reached'}" + (f" (compute ratio {n_ref / v:.1f}x)" if v else "")
                  for k, v in reach.items()]
        lines.append("")
    first = next(iter(results.values()))
    estimate = resolve_difficulty(first, cfg.buckets, cfg.difficulty)
    buckets = difficulty_buckets(first, cfg.buckets, estimate)
    report["by_difficulty"] = {k: accuracy_by_bucket(v, buckets, cfg.selector) for k, v in results.items()}
    lines += [f"Accuracy by difficulty bucket (0 = easiest, difficulty estimate: {estimate}):", ""]
    lines += [f"- {k}: " + ", ".join(f"{b}: {a:.3f}" for b, a in v.items()) for k, v in report["by_difficulty"].items()]
    if len(results) > 1:
        opt = compute_optimal(results, cfg.selector, buckets, cfg.folds)
        report["compute_optimal"] = {k: v for k, v in opt.items() if k != "correct"}
        lines += ["", f"Compute-optimal ({cfg.selector}; best strategy per difficulty bucket): accuracy "
                  f"{opt['cross_fitted_accuracy']:.3f} cross-fitted ({cfg.folds} folds: each problem's strategy chosen on the "
                  f"others), {opt['accuracy']:.3f} in-sample; choice {opt['choice']}"]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    (out / "eval.json").write_text(json.dumps(report, indent=2, default=str))
    return report


Config = EvalConfig


def main(cfg: EvalConfig) -> int:
    evaluate_runs(cfg)
    print((Path(cfg.output_dir) / "eval.md").read_text())
    return 0
