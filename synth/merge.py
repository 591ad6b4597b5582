"""Merging the output dirs of sharded runs (`synth generate --shard i/n` or `synth label --shard i/n`) into one.

Every shard 0..n-1 must be there exactly once, all of the same command, made with the same config (apart
from the shard and run-control flags), and finished (with their parquet data). Shards are contiguous
blocks of the pool, so rows come back in pool order and the merged run equals an unsharded one:
`synth eval`, `synth filter`, `synth train-prm` and `synth push` take it like any run of that command.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synth.cards import split_card
from synth.config import ConfigError
from synth.evaluate import curves_section, summarize
from synth.hub import PUSH_KEYS, PushConfig, check_push, fetch_configs, parse_hub_spec, read_rows, write_dataset
from synth.journal import Journal
from synth.problems import parse_shard
from synth.rundir import MARKER, RunDir, config_diff

OUTPUTS = ("rows.jsonl", "data", "data.tmp", "README.md", "summary.json", "accuracy_vs_n.png", "source_config.yaml")
# Keys of a shard's config that may differ between shards.
_RUN_CONTROL = (
    "shard",
    "output_dir",
    "resume",
    "overwrite",
    "batch_size",
    "problems_per_batch",
    "traces_per_batch",
    "vllm",
    *PUSH_KEYS,
)
MERGEABLE = ("generate", "label")


class MergeError(ValueError):
    """Shards that do not make one complete run; the message names the shards."""


@dataclass
class MergeConfig(PushConfig):
    runs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Shards of a `synth generate` or `synth label` run (--shard i/n), any order: output dirs, or Hub configs "
            "'user/name:config[@revision]' (globs such as 'user/name:best_of_n--*--shard-*' allowed)."
        },
    )
    output_dir: str = field(
        default="runs/merged", metadata={"help": "Where the merged run (rows.jsonl, parquet, card) goes."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a merged run in output_dir made from other shards."}
    )


@dataclass
class Shard:
    path: Path
    command: str
    index: int
    count: int
    config: dict[str, Any]


def read_shard(run: str | Path) -> Shard:
    """A shard's dir, command and config: from its config.yaml, or for a shard downloaded from the Hub,
    from the run record in its card."""
    path = Path(run)
    saved = path / "config.yaml"
    if saved.exists():
        config = yaml.safe_load(saved.read_text()) or {}
        try:
            command = json.loads((path / MARKER).read_text())["command"]
        except (OSError, ValueError, KeyError):  # made before run dirs had a marker
            command = "label" if "rollouts" in config else "generate"
    elif (path / "README.md").exists() and (record := split_card((path / "README.md").read_text())[0].get("synth")):
        config, command = record.get("config") or {}, record.get("command") or "unknown"
    else:
        raise MergeError(f"{path}: no config.yaml (is it a `synth generate` or `synth label` output dir?)")
    if command not in MERGEABLE:
        raise MergeError(f"{path}: a `synth {command}` run; merge joins shards of {' or '.join(MERGEABLE)} runs")
    if not config.get("shard"):
        raise MergeError(f"{path}: not a sharded run (its config has no `shard: i/n`)")
    try:
        index, count = parse_shard(str(config["shard"]))
    except ValueError as err:
        raise MergeError(f"{path}: {err}") from None
    return Shard(path, command, index, count, config)


def check_shards(shards: list[Shard]) -> int:
    """The shard count n, after checking the shards are 0..n-1 once each, of one command and config."""
    commands = sorted({s.command for s in shards})
    if len(commands) > 1:
        raise MergeError("the runs mix commands: " + ", ".join(f"{s.path} is a {s.command} run" for s in shards))
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise MergeError(
            "the runs disagree on the number of shards: "
            + ", ".join(f"{s.path} is {s.index}/{s.count}" for s in shards)
        )
    n = counts[0]
    seen: dict[int, Path] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(f"shard {s.index}/{n} is given twice: {seen[s.index]} and {s.path}")
        seen[s.index] = s.path
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise MergeError(
            f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)}: run `synth {commands[0]} --shard i/{n}` "
            f"for them (have {', '.join(f'{i}/{n}' for i in sorted(seen))})"
        )
    base = _comparable(shards[0].config)
    for s in shards[1:]:
        keys = config_diff(base, _comparable(s.config))
        if keys:
            raise MergeError(
                f"{s.path} (shard {s.index}/{n}) was made with another config than {shards[0].path}: "
                f"{', '.join(keys)} differ"
            )
    return n


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RUN_CONTROL}


def merge_rows(shards: list[Shard]) -> list[dict[str, Any]]:
    """All rows in pool order; row ids must be unique across shards."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    owner: dict[str, Shard] = {}
    for s in sorted(shards, key=lambda s: s.index):
        if not (s.path / "data").is_dir():
            raise MergeError(
                f"{s.path} (shard {s.index}/{s.count}) is not finished (no parquet data): resume it with --resume true"
            )
        rows = read_rows(s.path)
        for r in rows:
            if r["id"] in owner:
                raise MergeError(
                    f"row {r['id']!r} is in shard {owner[r['id']].index}/{s.count} ({owner[r['id']].path}) "
                    f"and in shard {s.index}/{s.count} ({s.path})"
                )
            owner[r["id"]] = s
        by_index[s.index] = rows
    return [r for i in sorted(by_index) for r in by_index[i]]  # shards are contiguous blocks of the pool


def run_dir(cfg: MergeConfig) -> RunDir:
    return RunDir.for_config(cfg, "merge", OUTPUTS, PUSH_KEYS, mode="rebuild", overwrite=cfg.overwrite)


def shard_dirs(runs: list[str], dest: Path) -> list[Path]:
    """Local dirs of the shards: local output dirs as they are, Hub specs ('user/name:config@revision', globs
    allowed) downloaded into `dest`."""
    out = []
    for run in runs:
        if Path(run).expanduser().exists() or parse_hub_spec(run) is None:
            out.append(Path(run).expanduser())
        else:
            out += fetch_configs(run, dest / f"hub-{len(out)}")
    return out


def merge(cfg: MergeConfig) -> dict[str, Any]:
    if len(cfg.runs) < 1:
        raise ConfigError("merge needs --runs: the output dirs of the shard runs (e.g. --runs runs/s0 runs/s1)")
    with tempfile.TemporaryDirectory(prefix="synth-merge-") as tmp:
        return _merge(cfg, shard_dirs(cfg.runs, Path(tmp)))


def _merge(cfg: MergeConfig, runs: list[Path]) -> dict[str, Any]:
    shards = [read_shard(r) for r in runs]
    n = check_shards(shards)
    rows = merge_rows(shards)
    run = run_dir(cfg).check()
    check_push(cfg)
    command = shards[0].command
    config = {**shards[0].config, "shard": None, "output_dir": str(run.path), "resume": False, "overwrite": False}
    with run.claim():
        out = run.path
        (out / "rows.jsonl").unlink(missing_ok=True)
        (out / "source_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        Journal(out / "rows.jsonl").append(rows)
        if command == "label":
            from synth.prm.label import label_stats

            summary = label_stats(rows)
            name = f"synth step labels ({config.get('rollouts')} rollouts, {n} shards merged)"
        else:
            summary = summarize(rows)
            name = f"synth {(config.get('search') or {}).get('strategy')} on {config.get('model')} ({n} shards merged)"
        summary["shards"] = n
        card = {
            "name": name,
            "model": config.get("model"),
            "config": config,
            "summary": summary,
            "merged_from": [str(s.path) for s in sorted(shards, key=lambda s: s.index)],
            "command": command,
        }
        strategy = (config.get("search") or {}).get("strategy")
        extra = curves_section(rows, out, strategy) if command == "generate" and rows and strategy else ""
        write_dataset(rows, out, card, kind="generate" if command == "generate" else "labels", extra=extra)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "command": command, "config": config}
