"""Stepwise PRM datasets (TRL convention): `prompt`, `completions` (list of steps), `labels` (list of floats).

Loads synth's own label output, TRL-style datasets such as Math-Shepherd / PRM800K conversions
(bool labels become 0.0 / 1.0), from a local dir or file, or from the Hub.
"""

from __future__ import annotations

from synth.formats import FormatError, validate


def load_stepwise(source: str, split: str = "train"):
    """A `datasets.Dataset` of validated stepwise rows in one layout: boolean `labels` and float `soft_labels`."""
    from synth.hub import load_source

    return canonical(validate(load_source(source, split, FormatError, "stepwise dataset"), "stepwise", source))


def canonical(ds):
    """Stepwise rows with boolean `labels` (a step is right) and float `soft_labels` (how likely), whatever the
    source: synth's label sets (both columns), those of synth 0.1 (soft `labels` plus `hard_labels`), TRL-style
    sets with boolean labels (soft = 0 or 1) or with float labels (soft as given, hard = at least 0.5)."""
    from datasets import List, Value

    if "soft_labels" in ds.column_names:
        return ds
    if "hard_labels" in ds.column_names:
        ds = ds.rename_columns({"labels": "soft_labels", "hard_labels": "labels"})
        fill = lambda r: {"labels": [bool(x) for x in r["labels"]], "soft_labels": [float(x) for x in r["soft_labels"]]}  # noqa: E731
    else:
        fill = lambda r: {
            "labels": [float(x) >= 0.5 for x in r["labels"]],
            "soft_labels": [float(x) for x in r["labels"]],
        }  # noqa: E731
    features = ds.features.copy()
    features["labels"], features["soft_labels"] = List(Value("bool")), List(Value("float64"))
    return ds.map(fill, features=features)


def load_stepwise_many(sources: list[str], split: str = "train"):
    """Several stepwise datasets as one: shared columns kept, a trace (prompt + steps) seen twice kept once."""
    from datasets import concatenate_datasets

    if not sources:
        raise FormatError("no stepwise dataset given")
    parts = [load_stepwise(s, split) for s in sources]
    if len(parts) == 1:
        return parts[0]
    shared = [c for c in parts[0].column_names if all(c in p.column_names for p in parts[1:])]
    features = parts[0].select_columns(shared).features
    try:  # e.g. bool labels in one dataset, floats in another: cast to the first one's types
        ds = concatenate_datasets([p.select_columns(shared).cast(features) for p in parts])
    except (ValueError, TypeError) as err:
        raise FormatError(f"cannot combine {sources}: their columns {shared} have different types ({err})") from None
    seen: set = set()
    keep = []
    for i, (prompt, steps) in enumerate(zip(ds["prompt"], ds["completions"])):
        if (prompt, tuple(steps)) not in seen:
            seen.add((prompt, tuple(steps)))
            keep.append(i)
    return ds.select(keep)
