"""Stepwise PRM datasets (TRL convention): `prompt`, `completions` (list of steps), `labels` (list of floats).

Loads synth's own label output, TRL-style datasets such as Math-Shepherd / PRM800K conversions
(bool labels become 0.0 / 1.0), from a local dir or file, or from the Hub.
"""

from __future__ import annotations


REQUIRED = ("prompt", "completions", "labels")


class StepwiseDataError(ValueError):
    """A stepwise dataset that cannot be used for PRM training or evaluation."""


def load_stepwise(source: str, split: str = "train"):
    """A `datasets.Dataset` with validated stepwise rows."""
    from synth.hub import load_source

    ds = load_source(source, split, StepwiseDataError, "stepwise dataset")
    validate(ds, source)
    return ds


def load_stepwise_many(sources: list[str], split: str = "train"):
    """Several stepwise datasets as one: shared columns kept, a trace (prompt + steps) seen twice kept once."""
    from datasets import concatenate_datasets

    if not sources:
        raise StepwiseDataError("no stepwise dataset given")
    parts = [load_stepwise(s, split) for s in sources]
    if len(parts) == 1:
        return parts[0]
    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts[1:])]
    features = parts[0].select_columns(shared).features
    try:  # e.g. bool labels in one dataset, floats in another: cast to the first one's types
        ds = concatenate_datasets([p.select_columns(shared).cast(features) for p in parts])
    except (ValueError, TypeError) as err:
        raise StepwiseDataError(f"cannot combine {sources}: their columns {shared} have different types ({err})") from None
    seen: set = set()
    keep = []
    for i, (prompt, steps) in enumerate(zip(ds["prompt"], ds["completions"])):
        if (prompt, tuple(steps)) not in seen:
            seen.add((prompt, tuple(steps)))
            keep.append(i)
    return ds.select(keep)


def validate(ds, name: str = "dataset") -> None:
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise StepwiseDataError(f"{name}: missing column(s) {missing}; it has {ds.column_names}")
    for i, row in enumerate(ds):
        steps, labels = row["completions"], row["labels"]
        if not steps:
            raise StepwiseDataError(f"{name}: row {i} has no steps")
        if len(steps) != len(labels):
            raise StepwiseDataError(f"{name}: row {i} has {len(steps)} steps but {len(labels)} labels")
        if any(not isinstance(s, str) or not s.strip() for s in steps):
            raise StepwiseDataError(f"{name}: row {i} has an empty step")
        if any(lab is None or not 0.0 <= float(lab) <= 1.0 for lab in labels):
            raise StepwiseDataError(f"{name}: row {i} has a label outside [0, 1]: {labels}")
