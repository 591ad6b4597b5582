"""Datasets in Hugging Face conventions: parquet shards + a README.md card with YAML metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

import synth


def write_dataset(rows: list[dict[str, Any]], out_dir: str | Path, card: dict[str, Any], split: str = "train",
                  rows_per_shard: int = 50_000) -> Path:
    """Write ``rows`` as ``data/{split}-0000i-of-0000n.parquet`` and a dataset card.

    ``load_dataset(out_dir)`` reads it back (the card's ``configs`` names the files).
    """
    from datasets import Dataset

    out = Path(out_dir)
    data_dir = out / "data"
    tmp = out / "data.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = max(1, -(-len(rows) // rows_per_shard))
    for i in range(shards):
        part = rows[i * rows_per_shard : (i + 1) * rows_per_shard]
        Dataset.from_list(part).to_parquet(str(tmp / f"{split}-{i:05d}-of-{shards:05d}.parquet"))
    shutil.rmtree(data_dir, ignore_errors=True)
    tmp.rename(data_dir)
    (out / "README.md").write_text(dataset_card(card, split, len(rows)))
    return out


def dataset_card(info: dict[str, Any], split: str, num_rows: int) -> str:
    """A card: YAML metadata (configs, tags, synth's run info), then a readable summary."""
    meta = {
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}],
        "tags": ["synthetic", "synth", "test-time-compute", "math"],
        "task_categories": ["text-generation"],
        "license": info.get("license", "apache-2.0"),
        "synth": json.loads(json.dumps(info, default=str)),
    }
    summary = info.get("summary", {})
    table = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in summary.items())
    name = info.get("name", "synth dataset")
    return f"""---
{yaml.safe_dump(meta, sort_keys=False)}---

# {name}

Generated with [synth](https://github.com/) {synth.__version__}: test-time search with a policy LLM,
answers verified against gold answers.

- Model: `{info.get('model')}`
- Strategy: `{info.get('config', {}).get('search', {}).get('strategy')}` with N = {info.get('config', {}).get('search', {}).get('n')}
- Problems: {num_rows}

## Results

| metric | value |
|---|---|
{table}

## Load it

```python
from datasets import load_dataset
ds = load_dataset("{info.get('load_path', 'path/to/this/dataset')}", split="{split}")
```

Each row is one problem with all its completions: `completions`, `steps`, `answers`, `verified`,
`num_tokens`, plus the majority-vote answer and the strategy parameters. The full config of the
run is in this card's YAML header under `synth.config`.
"""


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
