"""SFT datasets: conversational prompt/completion rows (TRL's format), loaded, validated and split.

A row is ``{"prompt": [{"role": "user", "content": problem}], "completion": [{"role": "assistant",
"content": trace}]}`` (a system message may lead the prompt). Plain-string prompt/completion rows are
wrapped into that form, so the policy's chat template is applied either way.

`sft_examples` builds such rows from `synth generate` rows. It is the minimal filter `synth rounds`
uses (verified and finished traces, exact duplicates dropped, the k shortest per problem); `synth
filter` writes the same format with more options.
"""

from __future__ import annotations

import json
import random
from typing import Any

REQUIRED = ("prompt", "completion")


class SFTDataError(ValueError):
    """An SFT dataset that cannot be trained on; the message names the problem."""


def load_sft(source: str, split: str = "train"):
    """A validated conversational `datasets.Dataset` with only the prompt and completion columns."""
    from synth.hub import load_source

    ds = load_source(source, split, SFTDataError, "SFT dataset")
    return validate(ds, source)


def validate(ds, name: str = "dataset"):
    """Check the columns and rows; returns the dataset reduced to conversational prompt/completion."""
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise SFTDataError(f"{name}: missing column(s) {missing}; it has {ds.column_names}. "
                           "Expected prompt/completion rows (e.g. written by `synth filter`)")
    if len(ds) == 0:
        raise SFTDataError(f"{name}: the dataset is empty (no verified traces to train on?)")
    ds = ds.select_columns(list(REQUIRED))
    for i, row in enumerate(ds):
        for col in REQUIRED:
            if not _text_of(row[col]).strip():
                raise SFTDataError(f"{name}: row {i} has an empty {col}")
    if isinstance(ds[0]["prompt"], str):
        ds = ds.map(as_conversational)
    return ds


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "".join(str(m["content"] or "") for m in value)
    raise SFTDataError(f"expected a string or a list of chat messages, got {type(value).__name__}")


def as_conversational(row: dict) -> dict:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "completion": [{"role": "assistant", "content": row["completion"]}]}


def chat_prompt(problem: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The prompt messages the policy sees at inference (`TransformersPolicy.chat_prompt`)."""
    messages = [{"role": "user", "content": problem}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def sft_examples(rows: list[dict], top_k: int, system_prompt: str | None = None) -> list[dict]:
    """Per problem: its verified, finished completions, exact duplicates dropped, the `top_k` shortest."""
    out = []
    for row in rows:
        seen, kept = set(), []
        for i, text in enumerate(row["completions"]):
            text = text.strip()
            if not row["verified"][i] or not row["finished"][i] or not text or text in seen:
                continue
            seen.add(text)
            kept.append((row["num_tokens"][i], len(text), text))
        for _, _, text in sorted(kept)[:top_k]:
            out.append({"prompt": chat_prompt(row["problem"], system_prompt),
                        "completion": [{"role": "assistant", "content": text}],
                        "id": row["id"], "gold_answer": row["gold_answer"], "source": row["source"]})
    return out


def split_by_prompt(ds, fraction: float, seed: int):
    """Hold out whole problems (all completions of a prompt on one side). Returns (train, eval or None)."""
    if fraction <= 0:
        return ds, None
    keys = [json.dumps(p, sort_keys=True) for p in ds["prompt"]]
    unique = sorted(set(keys))
    random.Random(seed).shuffle(unique)
    held = set(unique[: int(round(len(unique) * fraction))])
    if not held or len(held) == len(unique):
        return ds, None  # too few problems to split: train on all of them
    train = [i for i, k in enumerate(keys) if k not in held]
    evals = [i for i, k in enumerate(keys) if k in held]
    return ds.select(train), ds.select(evals)
