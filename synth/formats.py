"""The dataset row formats synth reads and writes, as TRL's trainers know them, and one validator for all.

- sft: conversational `prompt` (messages) and `completion` (the assistant message), or plain strings;
- stepwise: `prompt` (str), `completions` (the steps) and `labels` (one per step, in [0, 1]);
- preference: `prompt`, `chosen` and `rejected` (conversational or plain).
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["sft", "stepwise", "preference"]
REQUIRED: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "stepwise": ("prompt", "completions", "labels"),
    "preference": ("prompt", "chosen", "rejected"),
}


class FormatError(ValueError):
    """A dataset that is not in the format a command needs; the message names the row and column."""


def text_of(value: Any) -> str:
    """The text of a plain string or of a list of chat messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "".join(str(m["content"] or "") for m in value)
    raise FormatError(f"expected a string or a list of chat messages, got {type(value).__name__}")


def validate(ds, kind: Kind, name: str = "dataset"):
    """Check a `datasets.Dataset` (or a list of rows) against a format; returns it unchanged."""
    columns = ds.column_names if hasattr(ds, "column_names") else sorted({k for r in ds for k in r})
    missing = [c for c in REQUIRED[kind] if c not in columns]
    if missing:
        raise FormatError(
            f"{name}: missing column(s) {missing}; it has {columns}. Expected {kind} rows ({', '.join(REQUIRED[kind])})"
        )
    if len(ds) == 0:
        raise FormatError(f"{name}: the dataset is empty")
    for i, row in enumerate(ds):
        try:
            _check_row(row, kind)
        except FormatError as err:
            raise FormatError(f"{name}: row {i} {err}") from None
    return ds


def _check_row(row: dict, kind: Kind) -> None:
    if kind == "stepwise":
        steps, labels = row["completions"], row["labels"]
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise FormatError("has an empty prompt")
        if not steps:
            raise FormatError("has no steps")
        if labels is None or len(steps) != len(labels):
            raise FormatError(f"has {len(steps)} steps but {len(labels or [])} labels")
        if any(not isinstance(s, str) or not s.strip() for s in steps):
            raise FormatError("has an empty step")
        if any(lab is None or isinstance(lab, str) or not 0.0 <= float(lab) <= 1.0 for lab in labels):
            raise FormatError(f"has a label outside [0, 1]: {labels}")
        return
    for col in REQUIRED[kind]:
        try:
            text = text_of(row[col])
        except FormatError as err:
            raise FormatError(f"column {col}: {err}") from None
        if not text.strip():
            raise FormatError(f"has an empty {col}")


# ---------------------------------------------------------------- stepwise label columns


def soft_label_column(columns) -> str:
    """Soft step labels (fraction of correct rollouts): `soft_labels` where synth wrote them, else `labels`."""
    return "soft_labels" if "soft_labels" in columns else "labels"


def hard_label_column(columns) -> str:
    """Hard step labels: `labels` (booleans), or `hard_labels` in label sets of synth 0.1 (whose `labels` were soft)."""
    return "hard_labels" if "hard_labels" in columns else "labels"


# ---------------------------------------------------------------- the schema of every dataset synth writes


def features(kind: str):
    """The `datasets.Features` of a row kind synth writes: every shard of a dataset gets the same schema,
    so an all-null column in one shard never clashes with a typed one in the next."""
    from datasets import Features, List, Value

    text, number, flag, count = Value("string"), Value("float64"), Value("bool"), Value("int64")
    messages = List({"role": text, "content": text})
    provenance = {"id": text, "source": text, "gold_answer": text}
    kinds = {
        "generate": {
            **provenance,
            "problem": text,
            "difficulty": number,
            "completions": List(text),
            "steps": List(List(text)),
            "answers": List(text),
            "verified": List(flag),
            "num_tokens": List(count),
            "finished": List(flag),
            "step_scores": List(List(number)),
            "scores": List(number),
            **{
                f"{how}_{what}": t
                for how in ("majority", "naive", "weighted")
                for what, t in (("answer", text), ("verified", flag))
            },
            "generated_tokens": count,
            "prefill_tokens": count,
            "cached_tokens": count,
            "prm_steps": count,
            "tree": text,
            "leaves": List(count),
            "strategy": text,
            "n": count,
            "temperature": number,
            "seed": count,
            "model": text,
            "metadata": text,
        },
        "labels": {
            "id": text,
            "prompt": text,
            "completions": List(text),
            "labels": List(flag),
            "soft_labels": List(number),
            "support": List(count),
            "problem_id": text,
            "verified": flag,
            "rollouts": count,
            "policy": text,
            "step_cut": text,
            "source": text,
        },
        "sft": {
            "prompt": messages,
            "completion": messages,
            **provenance,
            "answer": text,
            "verified": flag,
            "score": number,
            "num_tokens": count,
        },
        "stepwise": {
            "prompt": text,
            "completions": List(text),
            "labels": List(flag),
            **provenance,
            "answer": text,
            "verified": flag,
            "score": number,
        },
        "preference": {
            "prompt": messages,
            "chosen": messages,
            "rejected": messages,
            **provenance,
            "chosen_answer": text,
            "rejected_answer": text,
            "chosen_score": number,
            "rejected_score": number,
        },
    }
    return Features(kinds[kind])
