"""SFT datasets: conversational prompt/completion rows (TRL's format), loaded, validated and split.

A row is ``{"prompt": [{"role": "user", "content": problem}], "completion": [{"role": "assistant",
"content": trace}]}`` (a system message may lead the prompt). Plain-string prompt/completion rows are
wrapped into that form, so the policy's chat template is applied either way. `synth filter` writes
such rows from `synth generate` runs; `synth rounds` uses the same filters.
"""

from __future__ import annotations

import json
import random

from synth.formats import REQUIRED, FormatError, validate


def load_sft(source: str, split: str = "train"):
    """A validated conversational `datasets.Dataset` with only the prompt and completion columns."""
    from synth.hub import load_source

    return as_sft(load_source(source, split, FormatError, "SFT dataset"), source)


def as_sft(ds, name: str = "dataset"):
    """Check the columns and rows; returns the dataset reduced to conversational prompt/completion."""
    validate(ds, "sft", name)
    ds = ds.select_columns(list(REQUIRED["sft"]))
    if isinstance(ds[0]["prompt"], str):
        ds = ds.map(as_conversational)
    return ds


def as_conversational(row: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def split_by_problem(ds, fraction: float, seed: int, column: str = "prompt"):
    """Hold out whole problems (every row of a prompt on one side): (train, eval), eval None when
    `fraction` is 0 or there are too few problems to split."""
    if fraction <= 0:
        return ds, None
    keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in ds[column]]
    unique = sorted(set(keys))
    random.Random(seed).shuffle(unique)
    held = set(unique[: int(round(len(unique) * fraction))])
    if not held or len(held) == len(unique):
        return ds, None  # too few problems to split: train on all of them
    train = [i for i, k in enumerate(keys) if k not in held]
    evals = [i for i, k in enumerate(keys) if k in held]
    return ds.select(train), ds.select(evals)
