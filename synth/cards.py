"""Dataset cards: the README.md of every dataset synth writes, as the Hub reads it.

The YAML header is `huggingface_hub.DatasetCardData`: pretty name, license (the model's and the pool's,
where both are known and agree), language, size category, tags, the `configs` that name the data files,
and `dataset_info` (features, split sizes, byte counts), so that `datasets` caches each dataset under its
own hash. synth's own record of the run sits under `synth:`. The body ends with a "load it" snippet:
the local path in a local card; `load_dataset("user/name", "config")` once pushed, when the card is
rewritten for the Hub (`for_hub`) without any local path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

import synth

LOAD_START, LOAD_END = "<!-- synth:load -->", "<!-- /synth:load -->"
# Licenses of the models and problem sources synth knows; anything else is "unknown" (check before publishing).
LICENSES = {
    "smollm2-135m": "apache-2.0",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "reasoning_gym": "apache-2.0",
}
# Keys of synth's run record whose values may be local paths: published as "<local>/name".
PATH_KEYS = ("output_dir", "load_path", "dataset", "path", "runs", "merged_from", "model", "prm", "decontaminate")


def size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if n < limit:
            return name
    return "10M<n<100M"


def model_license(model: str | None) -> str | None:
    """The license of a model spec: synth's table, or the `license` in a local checkpoint's model card."""
    if not model:
        return None
    if model in LICENSES:
        return LICENSES[model]
    card = Path(model).expanduser() / "README.md"
    if card.is_file():
        meta, _ = split_card(card.read_text())
        return meta.get("license")
    return None


def dataset_license(model: str | None, sources: list[str]) -> str:
    """The license a dataset gets: its model's and its problems' where all are known and agree, else unknown."""
    found = {model_license(model)} | {LICENSES.get(s.split("/")[0]) for s in sources or ["unknown"]}
    return found.pop() if len(found) == 1 and None not in found else "unknown"


def load_snippet(target: str, config: str | None = None, split: str = "train") -> str:
    name = f', "{config}"' if config and config != "default" else ""
    return (
        f"{LOAD_START}\n## Load it\n\n```python\nfrom datasets import load_dataset\n"
        f'ds = load_dataset("{target}"{name}, split="{split}")\n```\n{LOAD_END}\n'
    )


def render(
    info: dict[str, Any],
    body: str,
    *,
    license: str,
    num_rows: int,
    split: str,
    data_pattern: str,
    dataset_info: dict | None,
    load_target: str,
) -> str:
    """A card's text: the YAML header and `body`, then the load snippet."""
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        pretty_name=info.get("name", "synth dataset"),
        license=license,
        language=["en"],
        size_categories=[size_category(num_rows)],
        task_categories=["text-generation"],
        tags=["synthetic", "synth", "test-time-compute", "math"],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": data_pattern}]}],
        dataset_info=dataset_info,
        synth=json.loads(json.dumps(info, default=str)),
    )
    return f"---\n{data.to_yaml()}\n---\n\n# {info.get('name', 'synth dataset')}\n\n{body.rstrip()}\n\n{load_snippet(load_target, split=split)}"


def split_card(text: str | None) -> tuple[dict[str, Any], str]:
    """(YAML metadata, markdown body) of a dataset card."""
    if text and text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            meta = yaml.safe_load(text[3:end]) or {}
            return (meta if isinstance(meta, dict) else {}), text[end + 4 :].lstrip("\n")
    return {}, text or ""


def join_card(meta: dict[str, Any], body: str) -> str:
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n{body}"


def scrub_paths(value: Any, key: str = "") -> Any:
    """synth's run record without local paths: a path under a PATH_KEYS key becomes '<local>/<name>'."""
    if isinstance(value, dict):
        return {k: scrub_paths(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v, key) for v in value]
    if isinstance(value, str) and key in PATH_KEYS and _is_local_path(value):
        return f"<local>/{Path(value).name}"
    return value


def display(source: str) -> str:
    """How a card names a source: a Hub id as is, a local path by its name only."""
    return f"<local>/{Path(source).name}" if _is_local_path(source) else source


def _is_local_path(text: str) -> bool:
    if text.startswith(("/", "./", "../", "~")) or Path(text).expanduser().exists():
        return True
    return "/" in text and text.count("/") != 1  # a Hub id has exactly one slash


def for_hub(card: str, repo_id: str, config: str, prefix: str, split: str = "train") -> str:
    """A local card as published: the Hub load snippet, no local path, links that resolve in `prefix`."""
    meta, body = split_card(card)
    if "synth" in meta:
        meta["synth"] = scrub_paths(meta["synth"])
    snippet = load_snippet(repo_id, config, split)
    if LOAD_START in body and LOAD_END in body:
        head, rest = body.split(LOAD_START, 1)
        body = head + snippet + rest.split(LOAD_END, 1)[1].lstrip("\n")
    else:
        body = body.rstrip() + "\n\n" + snippet
    return join_card(meta, body)


def prefix_links(body: str, prefix: str) -> str:
    """Relative links and images of a config folder's card, as seen from the repo's root card."""
    if not prefix:
        return body
    return re.sub(r"\]\((?![a-z]+:|/|#)([^)]+)\)", lambda m: f"]({prefix}{m.group(1)})", body)


def root_card(pushed: str, existing: str | None, name: str, prefix: str, split: str = "train") -> str:
    """The repo's README: the existing card (or this config's) with config `name` listed (replacing an old entry).

    Pushing the default config also brings its own card body and metadata; a named config only adds its
    `configs` entry to a card that is already there (or, in a new repo, brings its card, links fixed)."""
    local_meta, local_body = split_card(pushed)
    old_meta, old_body = split_card(existing)
    if existing is None or name == "default":
        meta, body = local_meta, prefix_links(local_body, prefix)
        meta.pop("dataset_info", None) if prefix else None  # a named config's sizes are not the root's
    else:
        meta, body = old_meta, old_body
    entry = {"config_name": name, "data_files": [{"split": split, "path": f"{prefix}data/{split}-*.parquet"}]}
    configs = [c for c in old_meta.get("configs", []) if c.get("config_name") != name] + [entry]
    meta = {
        **meta,
        "configs": sorted(configs, key=lambda c: (c.get("config_name") != "default", c.get("config_name", ""))),
    }
    return join_card(meta, body)


def version() -> str:
    return synth.__version__
