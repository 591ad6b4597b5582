"""The filter run: generate rows -> filtered training data (SFT, stepwise PRM or preference)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import synth
from synth.cards import display
from synth.config import ConfigError, check_fields, from_dict, to_dict
from synth.filter.formats import preference_pairs, to_preference, to_sft, to_stepwise
from synth.filter.select import (
    FilterError,
    Filters,
    NgramIndex,
    Record,
    Step,
    build_filters,
    correct_label,
    flatten,
    run_filters,
)
from synth.hub import PUSH_KEYS, PushConfig, check_push, read_rows, write_dataset
from synth.rundir import RunDir

log = logging.getLogger(__name__)

REQUIRED = ("id", "problem", "completions", "answers", "verified")
_TEXT_COLUMNS = ("problem", "question", "prompt", "text", "input")
OUTPUTS = ("data", "data.tmp", "README.md", "funnel.json")


@dataclass
class FilterConfig(PushConfig):
    dataset: str = field(
        default="",
        metadata={
            "help": "A `synth generate` (or `synth merge`) output dir, a .parquet/.jsonl of its rows, or a Hub dataset id."
        },
    )
    output_dir: str = field(
        default="runs/filter", metadata={"help": "Where the filtered dataset (parquet + card) goes."}
    )
    format: Literal["sft", "stepwise", "preference"] = field(
        default="sft",
        metadata={
            "help": "Output format: sft (prompt/completion chat), stepwise (PRM: prompt/completions/labels), preference (prompt/chosen/rejected)."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message put before the problem in sft/preference prompts (null: none)."}
    )
    filters: Filters = field(default_factory=Filters)
    decontaminate: list[Any] = field(
        default_factory=list,
        metadata={
            "help": "Eval sets to decontaminate against: local files/dirs, Hub ids 'owner/name[:split]', or pool mappings like {source: reasoning_gym, tasks: [chain_sum], seed: 99} (on the command line: '[{...}]')."
        },
    )
    decontam_ngram: int = field(
        default=13, metadata={"range": "[1, inf)", "help": "Word n-gram size of the decontamination overlap test."}
    )
    decontaminate_completions: bool = field(
        default=False, metadata={"help": "Also test completions (not only problems) for overlap with the eval sets."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace an output_dir synth filter made with another config (to replace data on the Hub: hub_overwrite)."
        },
    )

    RENAMED = {
        **PushConfig.RENAMED,
        "private": "hub_private",
        "config_name": "hub_config_name",
        "revision": "hub_revision",
    }

    def __post_init__(self):
        super().__post_init__()
        check_fields(self)
        if self.format != "sft" and self.filters.correctness == "none":
            raise ValueError(
                f"format {self.format} needs correct/wrong labels: use filters.correctness auto, verified or majority"
            )


# ---------------------------------------------------------------- inputs


def load_generate_rows(source: str) -> list[dict[str, Any]]:
    """Rows of a generate dataset: a local dir (parquet, or the journal of an unfinished run), a file, or a Hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "data").is_dir():
            rows = read_rows(path)
        elif (path / "rows.jsonl").exists():
            from synth.journal import Journal

            log.warning("%s has no parquet data yet (unfinished run?): reading its rows.jsonl", path)
            rows = Journal(path / "rows.jsonl").read()
        else:
            raise FilterError(f"{path}: neither data/*.parquet nor rows.jsonl (is it a `synth generate` output dir?)")
    elif path.exists():
        rows = _read_table(path)
    elif source.count("/") == 1 and not source.startswith((".", "/")):
        rows = _hub_rows(source, "train")
    else:
        raise FileNotFoundError(f"dataset not found: {source}")
    if rows:
        missing = [c for c in REQUIRED if c not in rows[0]]
        if missing:
            raise FilterError(
                f"{source}: missing column(s) {missing}, so not `synth generate` rows; it has {sorted(rows[0])}"
            )
    return rows


def _read_table(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        text = path.read_text()
        try:
            data = json.loads(text)
            return data if isinstance(data, list) else data.get("data", [data])
        except json.JSONDecodeError:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        return df.astype(object).where(df.notna(), None).to_dict("records")
    if path.suffix == ".txt":
        return [{"problem": line} for line in path.read_text().splitlines() if line.strip()]
    raise FilterError(f"{path}: unsupported file type {path.suffix!r} (use .parquet, .jsonl, .json, .csv or .txt)")


def _hub_rows(dataset: str, split: str) -> list[dict[str, Any]]:
    from synth.hub import load_hub

    return load_hub(dataset, None, split, FilterError, "the dataset").to_list()


def load_eval_set(spec: Any) -> tuple[str, list[str]]:
    """(name, problem texts) of an eval set: a pool mapping, a local file or dir, or 'owner/name[:split]'."""
    if isinstance(spec, dict):
        from synth.problems import PoolConfig, load_pool

        spec = dict(spec)
        name = spec.pop("name", None)
        pool = from_dict(PoolConfig, spec, prefix="decontaminate.")
        label = name or pool.dataset or pool.path or f"{pool.source}:{','.join(pool.tasks)}@seed{pool.seed}"
        return label, [p.problem for p in load_pool(pool)]
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return path.name, _texts(read_rows(path), text)
    if path.exists():
        return path.name, _texts(_read_table(path), text)
    if text.count("/") == 1 or (":" in text and text.split(":")[0].count("/") == 1):
        dataset, _, split = text.partition(":")
        return text, _texts(_hub_rows(dataset, split or "test"), text)
    raise FilterError(f"decontaminate: {text!r} is neither a local file/dir nor a Hub id 'owner/name[:split]'")


def _texts(rows: list[dict[str, Any]], name: str) -> list[str]:
    if not rows:
        return []
    column = next((c for c in _TEXT_COLUMNS if c in rows[0]), None)
    if column is None:
        raise FilterError(
            f"decontaminate {name}: no problem column (looked for {list(_TEXT_COLUMNS)}; it has {sorted(rows[0])})"
        )
    out = []
    for r in rows:
        value = r[column]
        if isinstance(value, list):  # a chat prompt: its messages' text
            value = "\n".join(m.get("content", "") for m in value if isinstance(m, dict))
        if value:
            out.append(str(value))
    return out


def build_index(specs: list[Any], n: int) -> NgramIndex | None:
    if not specs:
        return None
    index = NgramIndex(n)
    for spec in specs:
        name, texts = load_eval_set(spec)
        if name in index.sets:
            name = f"{name} ({len(index.sets)})"
        index.add(name, texts)
        log.info("decontamination set %s: %d problems", name, index.sizes[name])
    return index


# ---------------------------------------------------------------- the command


def select(
    records: list[Record], cfg: FilterConfig, index: NgramIndex | None = None
) -> tuple[list[dict[str, Any]], list[Step]]:
    """Filter the records and build the output rows in `cfg.format`; returns (rows, funnel)."""
    f = cfg.filters
    ungraded = any(r["verified"] is None for r in records)
    records, funnel = run_filters(records, build_filters(f, cfg.format, index, cfg.decontaminate_completions, ungraded))
    if cfg.format == "sft":
        return to_sft(records, cfg.system_prompt), funnel
    for r in records:
        r["correct"] = correct_label(r, f.correctness, f.min_agreement)
    labelled = [r for r in records if r["correct"] is not None]
    funnel.append(Step("correctness known", len(labelled), len(records) - len(labelled)))
    if cfg.format == "stepwise":
        return to_stepwise(labelled), funnel
    pairs = preference_pairs(labelled, f.top_k)
    funnel.append(Step("paired (chosen + rejected)", 2 * len(pairs), len(labelled) - 2 * len(pairs)))
    return to_preference(pairs, cfg.system_prompt), funnel


def funnel_table(total: int, funnel: list[Step], rows: int, fmt: str) -> str:
    lines = ["| step | kept | removed |", "|---|---:|---:|", f"| input completions | {total} | |"]
    lines += [f"| {s.name} | {s.kept} | {s.removed} |" for s in funnel]
    lines.append(f"| **output rows ({fmt})** | **{rows}** | |")
    return "\n".join(lines)


_FORMAT_DOC = {
    "sft": "Conversational prompt-completion rows for TRL's `SFTTrainer`: `prompt` (user message, after an optional "
    "system message) and `completion` (the assistant's solution, one that passed the filters below).",
    "stepwise": "Stepwise PRM rows (TRL convention, `synth train-prm`): `prompt`, `completions` (the steps) and `labels`. "
    "These are outcome labels: every step of a correct trace is True, every step of a wrong one False "
    "(earlier steps of a wrong trace may be right; `synth label` computes real step labels with rollouts).",
    "preference": "Conversational preference rows for TRL's `DPOTrainer`: `prompt`, `chosen` (a correct completion) and "
    "`rejected` (a wrong completion of the same problem).",
}


def card_body(cfg: FilterConfig, source: dict[str, Any], total: int, funnel: list[Step], rows: int) -> str:
    sets = "\n".join(
        f"- `{s.name[len('decontaminate ') :]}`: {s.removed} completions removed"
        for s in funnel
        if s.name.startswith("decontaminate ")
    )
    decontam = f"\nDecontaminated ({cfg.decontam_ngram}-gram overlap) against:\n\n{sets}\n" if sets else ""
    return f"""Filtered with synth {synth.__version__} (`synth filter --format {cfg.format}`) from test-time search
traces. {_FORMAT_DOC[cfg.format]}

## Source run

- Dataset: `{display(cfg.dataset)}`
- Model: `{source["model"]}`
- Strategy: `{source["strategy"]}` with N = {source["n"]}
- Problems: {source["problems"]}, completions: {total}

## Funnel

{funnel_table(total, funnel, rows, cfg.format)}
{decontam}
The filter settings are in this card's YAML header under `synth.config`.
"""


def source_info(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key):
        found = {r.get(key) for r in rows if r.get(key) is not None}
        try:
            found = sorted(found)
        except TypeError:  # mixed types
            found = sorted(found, key=str)
        if not found:
            return "unknown"
        return found[0] if len(found) == 1 else ", ".join(map(str, found))

    return {"model": values("model"), "strategy": values("strategy"), "n": values("n"), "problems": len(rows)}


def run_dir(cfg: FilterConfig) -> RunDir:
    return RunDir.for_config(cfg, "filter", OUTPUTS, PUSH_KEYS, mode="rebuild", overwrite=cfg.overwrite)


def run(cfg: FilterConfig) -> dict[str, Any]:
    if not cfg.dataset:
        raise ConfigError("filter needs --dataset: the output dir of a `synth generate` run")
    out = run_dir(cfg).check()
    rows = load_generate_rows(cfg.dataset)
    records = flatten(rows)
    rows_out, funnel = select(records, cfg, build_index(cfg.decontaminate, cfg.decontam_ngram))
    table = funnel_table(len(records), funnel, len(rows_out), cfg.format)
    if not rows_out:
        raise FilterError(f"every completion was filtered out; nothing written.\n{table}")
    check_push(cfg)
    source = source_info(rows)
    info = {
        "name": f"synth {cfg.format} data from {source['model']} ({source['strategy']}, N={source['n']})",
        "model": source["model"],
        "source": {**source, "dataset": cfg.dataset},
        "command": "filter",
        "config": to_dict(cfg),
        "funnel": [s._asdict() for s in funnel],
        "summary": {"input_completions": len(records), "rows": len(rows_out)},
    }
    with out.claim():
        write_dataset(
            rows_out, out.path, info, kind=cfg.format, body=card_body(cfg, source, len(records), funnel, len(rows_out))
        )
        (out.path / "funnel.json").write_text(
            json.dumps({"input": len(records), "steps": [s._asdict() for s in funnel], "rows": len(rows_out)}, indent=2)
        )
    return {"output_dir": str(out.path), "rows": len(rows_out), "funnel": funnel, "table": table}
