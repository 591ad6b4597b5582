"""Problem pools: reasoning-gym tasks (offline), local json/jsonl/parquet/csv files, Hub datasets."""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synth.config import check_fields
from synth.records import Problem

log = logging.getLogger(__name__)


class PoolError(ValueError):
    """A pool that cannot be loaded; the message names the problem."""


@dataclass
class PoolConfig:
    source: Literal["reasoning_gym", "file", "hub"] = field(
        default="reasoning_gym", metadata={"help": "Where problems come from."}
    )
    tasks: list[str] = field(
        default_factory=lambda: ["basic_arithmetic"],
        metadata={"help": "reasoning-gym tasks, 'name' or 'name:weight' for a mix."},
    )
    num_problems: int = field(
        default=32,
        metadata={"range": "[1, inf)", "help": "Problems in a reasoning-gym pool (split across tasks by weight)."},
    )
    seed: int = field(
        default=0, metadata={"help": "reasoning-gym generation seed (use another seed for a held-out pool)."}
    )
    task_config: dict = field(
        default_factory=dict,
        metadata={
            "help": "reasoning-gym difficulty knobs: {key: value} for every task, or {task: {key: value}} per task."
        },
    )
    path: str | None = field(default=None, metadata={"help": "Local .json/.jsonl/.parquet/.csv file (source: file)."})
    dataset: str | None = field(
        default=None, metadata={"help": "Hub dataset id (source: hub), e.g. HuggingFaceH4/MATH-500."}
    )
    subset: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    split: str = field(default="test", metadata={"help": "Hub dataset split."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    id_column: str | None = field(
        default=None,
        metadata={"help": "Column holding a problem id (default: 'id' when there is one, else file stem + row index)."},
    )
    difficulty_column: str | None = field(
        default=None, metadata={"help": "Column holding a difficulty (e.g. MATH-500 'level')."}
    )
    limit: int | None = field(
        default=None, metadata={"range": "[1, inf)", "help": "Use only the first N problems of a file or Hub pool."}
    )

    def __post_init__(self):
        check_fields(self)
        if self.source == "file" and not self.path:
            raise ValueError("source is 'file' but path is not set")
        if self.source == "hub" and not self.dataset:
            raise ValueError("source is 'hub' but dataset is not set")


@dataclass
class PoolReport:
    loaded: int
    skipped_ids: list[str]


def _task_weights(tasks: list[str]) -> list[tuple[str, float]]:
    out = []
    for spec in tasks:
        name, _, weight = spec.partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise PoolError(f"pool.tasks: bad weight in {spec!r} (use name:weight, e.g. chain_sum:2)") from None
        if w <= 0:
            raise PoolError(f"pool.tasks: weight of {name!r} must be > 0")
        out.append((name.strip(), w))
    if not out:
        raise PoolError("pool.tasks is empty")
    return out


def _split_counts(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of `total` by weights (deterministic)."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _difficulty(meta: dict) -> float | None:
    diff = meta.get("difficulty")
    if isinstance(diff, (int, float)):
        return float(diff)
    # reasoning-gym puts the config ranges under "difficulty"; the entry's own values are top-level
    values = [meta[k] for k in (diff or {}) if isinstance(meta.get(k), (int, float))]
    return float(sum(values)) if values else None


def _reasoning_gym(cfg: PoolConfig) -> list[Problem]:
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    tasks = _task_weights(cfg.tasks)
    per_task = isinstance(cfg.task_config, dict) and any(k in DATASETS for k in cfg.task_config)
    problems: list[list[Problem]] = []
    for (name, _), count in zip(tasks, _split_counts(cfg.num_problems, [w for _, w in tasks])):
        if name not in DATASETS:
            close = difflib.get_close_matches(name, list(DATASETS), n=3)
            raise PoolError(
                f"unknown reasoning-gym task {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        if count == 0:
            continue
        kwargs = cfg.task_config.get(name, {}) if per_task else dict(cfg.task_config)
        try:
            ds = reasoning_gym.create_dataset(name, size=count, seed=cfg.seed, **kwargs)
        except TypeError as err:
            raise PoolError(
                f"task {name}: bad task_config ({err}); valid keys are those of reasoning-gym's {DATASETS[name][1].__name__}"
            ) from None
        except (ValueError, AssertionError) as err:
            raise PoolError(f"task {name}: invalid task_config {kwargs}: {err}") from None
        rows = []
        for i, entry in enumerate(ds):
            entry = json.loads(json.dumps(entry, default=str))  # survives parquet / jsonl round trips
            rows.append(
                Problem(
                    id=f"{name}-{cfg.seed}-{i}",
                    problem=entry["question"],
                    answer=str(entry["answer"]),
                    source=f"reasoning_gym/{name}",
                    metadata={"reasoning_gym": {"dataset": name, "entry": entry}},
                    difficulty=_difficulty(entry.get("metadata", {})),
                )
            )
        problems.append(rows)
    # interleave tasks so any prefix of the pool is a mix
    out = []
    for i in range(max(len(r) for r in problems)):
        out += [r[i] for r in problems if i < len(r)]
    return out


def _as_text(value: Any, column: str, where: str) -> str | None:
    """A problem, answer or id cell as text, exactly as written; None when empty. A list or mapping
    (a chat, a structured answer) is an error: stringifying it would hide the problem in the data."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN: a missing cell
            return None
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))  # a float column holding whole numbers (e.g. pandas with missing cells)
        return repr(value)
    if isinstance(value, (int, str)):
        text = str(value).strip()
        return text or None
    raise PoolError(
        f"{where}: column {column!r} holds a {type(value).__name__} ({str(value)[:60]}), not text; "
        "point pool.problem_column, pool.answer_column and pool.id_column at text columns"
    )


def _from_rows(
    rows: list[dict], columns: list[str], cfg: PoolConfig, name: str, source: str
) -> tuple[list[Problem], PoolReport]:
    id_column = cfg.id_column or ("id" if "id" in columns else None)
    for col in (cfg.problem_column, cfg.answer_column, id_column, cfg.difficulty_column):
        if col and col not in columns:
            raise PoolError(
                f"{name}: no column {col!r}; columns are {columns} (set pool.problem_column / pool.answer_column)"
            )
    problems, skipped = [], []
    text_columns = (cfg.problem_column, cfg.answer_column, id_column)
    for i, row in enumerate(rows[: cfg.limit] if cfg.limit is not None else rows):
        where = f"{name} row {i + 1}"
        pid = (
            _as_text(row.get(id_column), id_column, where) if id_column else f"{Path(name).stem.replace('/', '_')}-{i}"
        )
        text = _as_text(row.get(cfg.problem_column), cfg.problem_column, where)
        answer = _as_text(row.get(cfg.answer_column), cfg.answer_column, where)
        if text is None or answer is None or pid is None:
            skipped.append(pid or f"row {i + 1}")
            continue
        diff = row.get(cfg.difficulty_column) if cfg.difficulty_column else None
        meta = {k: v for k, v in row.items() if k not in text_columns}
        problems.append(
            Problem(
                pid,
                text,
                answer,
                source,
                json.loads(json.dumps(meta, default=str)),
                float(diff) if isinstance(diff, (int, float)) and not isinstance(diff, bool) else _level(diff),
            )
        )
    return problems, PoolReport(len(problems), skipped)


def _level(value: Any) -> float | None:
    """'Level 3' -> 3.0 (MATH style); anything else unparsable -> None."""
    if value is None:
        return None
    digits = "".join(ch for ch in str(value) if ch.isdigit() or ch == ".")
    try:
        return float(digits)
    except ValueError:
        return None


def _json_records(path: Path) -> list[dict]:
    """A .json (a list of objects, or {"data": [...]}) or .jsonl file, read as written: numbers keep
    their digits (no float rounding), strings stay strings. Errors name the line."""
    text = path.read_text(encoding="utf-8-sig")  # a UTF-8 BOM is no reason to refuse a file
    exact = {"parse_int": _Number, "parse_float": _Number}
    if path.suffix == ".json" or text.lstrip()[:1] == "[":
        try:
            data = json.loads(text, **exact)
        except json.JSONDecodeError as err:
            if path.suffix == ".json":
                raise PoolError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
        else:
            records = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
            if isinstance(data, dict) and records is None:
                records = [data]
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise PoolError(f'{path}: expected a list of objects (or {{"data": [...]}})')
            return records
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, **exact)
        except json.JSONDecodeError as err:
            raise PoolError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise PoolError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        records.append(row)
    return records


class _Number(str):
    """A JSON number kept as the text it was written as ("007" stays a string anyway; 1.50 stays "1.50")."""


def _plain(value: Any) -> Any:
    """Metadata values back to JSON types (numbers as numbers), keeping big integers exact."""
    if isinstance(value, _Number):
        text = str(value)
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _csv_records(path: Path) -> tuple[list[dict], list[str]]:
    import csv

    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            rows = [{k: (v if v != "" else None) for k, v in row.items() if k is not None} for row in reader]
        except csv.Error as err:
            raise PoolError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
        return rows, list(reader.fieldnames or [])


def _file(cfg: PoolConfig) -> tuple[list[Problem], PoolReport]:
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise PoolError(f"pool file not found: {path}")
    if not path.is_file():
        raise PoolError(f"pool.path {path} is not a file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            rows, columns = table.to_pylist(), table.column_names
        elif path.suffix == ".csv":
            rows, columns = _csv_records(path)
        elif path.suffix in (".jsonl", ".json"):
            raw = _json_records(path)
            columns = list(dict.fromkeys(k for r in raw for k in r))
            text_columns = {cfg.problem_column, cfg.answer_column, cfg.id_column or "id"}
            rows = [
                {k: (str(v) if isinstance(v, _Number) else v) if k in text_columns else _plain(v) for k, v in r.items()}
                for r in raw
            ]
        else:
            raise PoolError(f"{path}: unsupported file type {path.suffix!r} (use .json, .jsonl, .parquet or .csv)")
    except PoolError:
        raise
    except UnicodeDecodeError as err:
        raise PoolError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds; name the file instead
        raise PoolError(f"{path}: could not read it: {str(err).splitlines()[0]}") from None
    return _from_rows(rows, columns, cfg, path.name, f"file/{path.name}")


def _hub(cfg: PoolConfig) -> tuple[list[Problem], PoolReport]:
    from synth.hub import load_hub

    ds = load_hub(cfg.dataset, cfg.subset, cfg.split, PoolError, "the pool")
    return _from_rows(list(ds), ds.column_names, cfg, cfg.dataset, f"hub/{cfg.dataset}")


def load_pool_with_report(cfg: PoolConfig) -> tuple[list[Problem], PoolReport]:
    if cfg.source == "reasoning_gym":
        problems = _reasoning_gym(cfg)
        report = PoolReport(len(problems), [])
    elif cfg.source == "file":
        problems, report = _file(cfg)
    else:
        problems, report = _hub(cfg)
    if report.skipped_ids:
        log.warning(
            "skipped %d rows with no problem or no answer (first: %s)",
            len(report.skipped_ids),
            ", ".join(report.skipped_ids[:5]),
        )
    if not problems:
        raise PoolError("the pool is empty: every row lacks a problem or an answer")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PoolError(f"duplicate problem id {dup!r} in the pool (set pool.id_column to a unique column)")
    return problems, report


def load_pool(cfg: PoolConfig) -> list[Problem]:
    return load_pool_with_report(cfg)[0]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def resolve_shard(text: str | None) -> str | None:
    """'auto' -> 'i/n' of this Slurm array task (SLURM_ARRAY_TASK_ID from SLURM_ARRAY_TASK_MIN, of
    SLURM_ARRAY_TASK_COUNT); anything else is checked and returned as it is."""
    if text != "auto":
        if text is not None:
            parse_shard(text)
        return text
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        raise ValueError(
            "shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, which are not set: "
            "run it inside a Slurm job array (sbatch --array), or give --shard i/n"
        )
    try:
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
        raise ValueError("shard auto: SLURM_ARRAY_TASK_ID / _MIN / _COUNT are not integers") from None
    return f"{index}/{count}"


def shard(problems: list, index: int, count: int) -> list:
    """Contiguous block `index` of `count`: deterministic, disjoint, complete, in pool order.

    Blocks rather than every n-th problem: multi-task pools interleave their tasks, so every n-th
    problem would give each shard one task (and very unequal run times).
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index}/{count}: need 0 <= i < n")
    return problems[index * len(problems) // count : (index + 1) * len(problems) // count]
