"""Comparing generate runs: accuracy-vs-N curves, a plot, accuracy by difficulty and the compute-optimal mix.

Runs are compared on the problems they share (a warning says how many when their problem sets differ).
A run is a local output dir (its journal, or its parquet data), or a dataset on the Hub.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from synth.config import check_fields
from synth.evaluate import (
    EvalError,
    accuracy_by_bucket,
    accuracy_curves,
    compute_optimal,
    curves_table,
    difficulty_buckets,
    first_n_reaching,
    plot_curves,
    resolve_difficulty,
)
from synth.journal import Journal
from synth.rundir import RunDir

log = logging.getLogger(__name__)
OUTPUTS = ("eval.md", "eval.json", "accuracy_vs_n.png")


@dataclass
class EvalConfig:
    runs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "`synth generate` runs (output dirs, or Hub dataset ids 'user/name[:config]'), e.g. one per strategy."
        },
    )
    output_dir: str = field(
        default="runs/eval", metadata={"help": "Where eval.md, eval.json and accuracy_vs_n.png go."}
    )
    samples: int = field(
        default=16, metadata={"range": "[1, inf)", "help": "Random subsets per N when subsampling completions."}
    )
    reference: str = field(
        default="best_of_n", metadata={"help": "Strategy whose accuracy at its largest N the others must reach."}
    )
    selector: Literal["majority", "naive", "weighted"] = field(
        default="weighted", metadata={"help": "Selector used for the compute-optimal mix (majority, naive, weighted)."}
    )
    difficulty: Literal["auto", "pool", "prm", "oracle"] = field(
        default="auto",
        metadata={
            "help": (
                "Difficulty estimate for the buckets: pool, prm (mean PRM score, known without gold answers), oracle (pass@1), "
                "auto (pool if it has enough levels, else prm, else oracle)."
            )
        },
    )
    buckets: int = field(default=3, metadata={"range": "[1, inf)", "help": "Difficulty buckets."})
    folds: int = field(
        default=5, metadata={"range": "[1, inf)", "help": "Folds for the cross-fitted compute-optimal accuracy."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an eval in output_dir made with other settings."})

    def __post_init__(self):
        check_fields(self)


def run_label(run_dir: Path, rows: list[dict]) -> str:
    strategy = rows[0]["strategy"] if rows else run_dir.name
    return f"{strategy}" if strategy else run_dir.name


def load_rows(run: str | Path) -> list[dict]:
    """The rows of a generate run: its journal, its parquet data, or a Hub dataset ('user/name[:config]')."""
    from synth.hub import read_rows

    path = Path(run).expanduser()
    rows: list[dict] = []
    if (path / "rows.jsonl").exists():
        rows = Journal(path / "rows.jsonl").read()
    elif (path / "data").is_dir():
        rows = read_rows(path)
    elif not path.exists() and str(run).split(":")[0].count("/") == 1 and not str(run).startswith((".", "/", "~")):
        rows = _hub_rows(str(run))
    if not rows:
        raise EvalError(f"{run}: no rows (is it a `synth generate` output dir?)")
    if "answers" not in rows[0] or "verified" not in rows[0]:
        raise EvalError(f"{run}: not `synth generate` rows (no answers / verified columns)")
    return rows


def _hub_rows(spec: str) -> list[dict]:
    from synth.hub import load_hub

    repo, _, name = spec.partition(":")
    return load_hub(repo, name or None, "train", EvalError, "the run").to_list()


def shared_problems(results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Every run restricted to the problems all runs have, in the first run's order."""
    ids = [set(r["id"] for r in rows) for rows in results.values()]
    common = set.intersection(*ids)
    if not common:
        raise EvalError("the runs share no problem: compare runs over the same pool")
    if any(len(i) != len(common) for i in ids):
        log.warning(
            "the runs cover different problems: comparing them on the %d they share (of %s)",
            len(common),
            ", ".join(str(len(i)) for i in ids),
        )
    return {name: [r for r in rows if r["id"] in common] for name, rows in results.items()}


def run_dir(cfg: EvalConfig) -> RunDir:
    return RunDir.for_config(cfg, "eval", OUTPUTS, mode="rebuild", overwrite=cfg.overwrite)


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
    results = shared_problems(results)
    run = run_dir(cfg).check()
    curves = {name: accuracy_curves(rows, cfg.samples) for name, rows in results.items()}
    with run.claim():
        return _write_eval(cfg, run.path, results, curves)


def _write_eval(cfg: EvalConfig, out: Path, results: dict[str, list[dict]], curves: dict) -> dict:
    plot_curves(curves, out / "accuracy_vs_n.png")
    report = {"curves": {k: {h: {str(n): a for n, a in c.items()} for h, c in v.items()} for k, v in curves.items()}}
    problems = len(next(iter(results.values())))
    report["problems"] = problems
    lines = [
        "# synth eval",
        "",
        f"{len(results)} run(s) on {problems} shared problems.",
        "",
        curves_table(curves),
        "",
        "![accuracy vs N](accuracy_vs_n.png)",
        "",
    ]
    ref = next((k for k in curves if k.startswith(cfg.reference)), None)
    if ref:
        selector = cfg.selector if cfg.selector in curves[ref] else "majority"
        ref_curve = curves[ref][selector]
        n_ref = max(ref_curve)
        target = ref_curve[n_ref]
        reach = {k: first_n_reaching(v.get(selector) or v["majority"], target) for k, v in curves.items()}
        report["reach"] = {"target": target, "reference_n": n_ref, "selector": selector, "first_n": reach}
        lines += [f"N at which each strategy first reaches {ref} {selector}@{n_ref} = {target:.3f}:", ""]
        lines += [
            f"- {k}: {v if v is not None else 'not reached'}" + (f" (compute ratio {n_ref / v:.1f}x)" if v else "")
            for k, v in reach.items()
        ]
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
        lines += [
            "",
            f"Compute-optimal ({cfg.selector}; best strategy per difficulty bucket): accuracy "
            f"{opt['cross_fitted_accuracy']:.3f} cross-fitted ({cfg.folds} folds: each problem's strategy chosen on the "
            f"others), {opt['accuracy']:.3f} in-sample; choice {opt['choice']}",
        ]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    (out / "eval.json").write_text(json.dumps(report, indent=2, default=str))
    return report
