"""`synth eval`: accuracy vs N of generate runs (maj/naive/weighted/pass@n), a plot, and the compute-optimal mix."""

from __future__ import annotations

from pathlib import Path

from synth.eval_runs import EvalConfig, evaluate_runs

Config = EvalConfig


def main(cfg: EvalConfig) -> int:
    evaluate_runs(cfg)
    print((Path(cfg.output_dir) / "eval.md").read_text())
    return 0
