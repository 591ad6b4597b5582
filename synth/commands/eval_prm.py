"""`synth eval-prm`: step AUROC of a PRM on a labelled stepwise dataset (and first-error F1 on ProcessBench-style rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from synth.config import ConfigError, check_fields


@dataclass
class EvalPRMConfig:
    prm: str = field(
        default="default", metadata={"help": "PRM to evaluate: 'default', 'default-sentence', or a PRM directory."}
    )
    dataset: str = field(
        default="", metadata={"help": "Stepwise dataset with labels (AUROC) or a first-error `label` column (F1)."}
    )
    split: str = field(default="train", metadata={"help": "Split to evaluate."})
    threshold: float = field(
        default=0.5,
        metadata={"range": "[0, 1]", "help": "Score below which a step counts as an error (first-error F1)."},
    )

    def __post_init__(self):
        check_fields(self)


Config = EvalPRMConfig


def main(cfg: EvalPRMConfig) -> int:
    from synth.prm.data import load_stepwise
    from synth.prm.evaluate import first_error_f1, step_auroc
    from synth.prm.load import load_prm

    if not cfg.dataset:
        raise ConfigError("eval-prm needs --dataset")
    ds = load_stepwise(cfg.dataset, cfg.split)
    prm = load_prm(cfg.prm)
    out = step_auroc(prm, ds)
    if "label" in ds.column_names:
        out.update(first_error_f1(prm, ds, cfg.threshold))
    print(json.dumps(out, indent=2))
    return 0
