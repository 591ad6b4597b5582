"""`synth merge`: join the output dirs of `synth generate --shard i/n` runs into one run.

Every shard 0..n-1 must be there exactly once, all made with the same config (apart from the
shard and run-control flags), and finished (with its parquet data). Rows come back in pool order
(problem j was in shard j % n), so the merged run equals an unsharded one and `synth eval`,
`synth filter` and `synth push` take it like any generate run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import synth
from synth.config import ConfigError
from synth.evaluate import summarize
from synth.generate.run import parse_shard
from synth.hub import read_rows, write_dataset
from synth.journal import Journal

_RUN_CONTROL = ("shard", "output_dir", "resume", "overwrite", "batch_size", "problems_per_batch", "vllm")


class MergeError(ValueError):
    """Shards that do not make one complete run; the message names the shards."""


@dataclass
class MergeConfig:
    runs: list[str] = field(default_factory=list, metadata={"help": "Output dirs of `synth generate --shard i/n` runs, one per shard (any order)."})
    output_dir: str = field(default="runs/merged", metadata={"help": "Where the merged run (rows.jsonl, parquet, card) goes."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run in output_dir."})
    push_to_hub: str | None = field(default=None, metadata={"help": (
        "Hub dataset repo (user/name) to push the dataset to when the run finishes (config '<strategy>-n<N>'); "
        "`synth push` gives full control (private, overwrite, config name).")})
    push_revision: str | None = field(default=None, metadata={"help": "Hub branch for push_to_hub (default main)."})


Config = MergeConfig


@dataclass
class Shard:
    path: Path
    index: int
    count: int
    config: dict[str, Any]


def read_shard(run: str | Path) -> Shard:
    path = Path(run)
    saved = path / "config.yaml"
    if not saved.exists():
        raise MergeError(f"{path}: no config.yaml (is it a `synth generate` output dir?)")
    config = yaml.safe_load(saved.read_text()) or {}
    if not config.get("shard"):
        raise MergeError(f"{path}: not a sharded run (its config has no `shard: i/n`)")
    try:
        index, count = parse_shard(str(config["shard"]))
    except ValueError as err:
        raise MergeError(f"{path}: {err}") from None
    return Shard(path, index, count, config)


def check_shards(shards: list[Shard]) -> int:
    """The shard count n, after checking the shards are 0..n-1 once each, with the same config."""
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise MergeError("the runs disagree on the number of shards: " + ", ".join(f"{s.path} is {s.index}/{s.count}" for s in shards))
    n = counts[0]
    seen: dict[int, Path] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(f"shard {s.index}/{n} is given twice: {seen[s.index]} and {s.path}")
        seen[s.index] = s.path
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)}: run `synth generate --shard i/{n}` "
                         f"for them (have {', '.join(f'{i}/{n}' for i in sorted(seen))})")
    base = _comparable(shards[0].config)
    for s in shards[1:]:
        other = _comparable(s.config)
        if other != base:
            keys = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise MergeError(f"{s.path} (shard {s.index}/{n}) was made with another config than {shards[0].path}: "
                             f"{', '.join(keys)} differ")
    return n


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RUN_CONTROL}


def merge_rows(shards: list[Shard]) -> list[dict[str, Any]]:
    """All rows in pool order; problem ids must be unique across shards."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    owner: dict[str, Shard] = {}
    for s in sorted(shards, key=lambda s: s.index):
        if not (s.path / "data").is_dir():
            raise MergeError(f"{s.path} (shard {s.index}/{s.count}) is not finished (no parquet data): resume it with --resume true")
        rows = read_rows(s.path)
        for r in rows:
            if r["id"] in owner:
                raise MergeError(f"problem {r['id']!r} is in shard {owner[r['id']].index}/{s.count} ({owner[r['id']].path}) "
                                 f"and in shard {s.index}/{s.count} ({s.path})")
            owner[r["id"]] = s
        by_index[s.index] = rows
    return [r for i in sorted(by_index) for r in by_index[i]]  # shards are contiguous blocks of the pool


def merge(cfg: MergeConfig) -> dict[str, Any]:
    if len(cfg.runs) < 1:
        raise ConfigError("merge needs --runs: the output dirs of the shard runs (e.g. --runs runs/s0,runs/s1)")
    shards = [read_shard(r) for r in cfg.runs]
    n = check_shards(shards)
    rows = merge_rows(shards)
    out = Path(cfg.output_dir)
    if (out / "rows.jsonl").exists() or (out / "data").exists():
        if not cfg.overwrite:
            raise ConfigError(f"{out} already holds a run: pass --overwrite true to replace it, or pick a new output_dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {**shards[0].config, "shard": None, "output_dir": str(out), "resume": False, "overwrite": False}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    Journal(out / "rows.jsonl").append(rows)
    summary = summarize(rows)
    summary["shards"] = n
    search = config.get("search") or {}
    card = {"name": f"synth {search.get('strategy')} on {config.get('model')} ({n} shards merged)", "model": config.get("model"),
            "config": config, "summary": summary, "merged_from": [str(s.path) for s in sorted(shards, key=lambda s: s.index)],
            "load_path": str(out.resolve()), "synth_version": synth.__version__}
    write_dataset(rows, out, card)
    if rows and search.get("strategy"):
        from synth.generate.run import _add_curves

        _add_curves(rows, out, search["strategy"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(cfg: MergeConfig) -> int:
    summary = merge(cfg)
    print(f"merged {summary['shards']} shards ({summary['problems']} problems) into {cfg.output_dir}")
    if cfg.push_to_hub:
        from synth.hub import push_run

        search = yaml.safe_load((Path(cfg.output_dir) / "config.yaml").read_text()).get("search") or {}
        push_run(cfg.output_dir, cfg.push_to_hub, f"{search.get('strategy', 'merged')}-n{search.get('n')}", cfg.push_revision)
    return 0
