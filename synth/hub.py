"""Datasets in Hugging Face conventions: parquet shards + a README.md card with YAML metadata."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import synth

log = logging.getLogger(__name__)


def write_dataset(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    card: dict[str, Any],
    split: str = "train",
    rows_per_shard: int = 50_000,
    body: str | None = None,
    extra: str = "",
) -> Path:
    """Write ``rows`` as ``data/{split}-0000i-of-0000n.parquet`` and a dataset card.

    ``load_dataset(out_dir)`` reads it back (the card's ``configs`` names the files). ``body``
    replaces the card's default markdown (which describes a `synth generate` dataset); ``extra`` is
    markdown added at its end.
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
    (out / "README.md").write_text(dataset_card(card, split, len(rows), body) + (f"\n{extra}" if extra else ""))
    return out


def read_rows(data_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a dataset dir written by `write_dataset`, straight from its parquet files."""
    import pyarrow.parquet as pq

    files = sorted((Path(data_dir) / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no data/*.parquet (is it a synth dataset dir?)")
    rows: list[dict[str, Any]] = []
    for f in files:  # one at a time: shards may differ in inferred types (an all-null column)
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def load_local(data_dir: str | Path, split: str = "train"):
    """A `datasets.Dataset` of a local dataset dir. A dir written by `write_dataset` is read straight
    from its parquet files: `load_dataset(dir)` caches by the dir's base name and the card's relative
    file patterns, so a rewritten dir (or another `runs/x/traces`) would read back stale rows."""
    from datasets import Dataset, load_dataset

    files = sorted((Path(data_dir) / "data").glob(f"{split}-*.parquet"))
    if not files:
        return load_dataset(str(data_dir), split=split)
    import pyarrow as pa
    import pyarrow.parquet as pq

    return Dataset(pa.concat_tables([pq.read_table(f) for f in files], promote_options="default"))


def load_source(source: str, split: str, error: type[Exception], what: str):
    """A `datasets.Dataset` from a local dataset dir, a .jsonl/.json/.parquet/.csv file, or a Hub id.
    Failures become `error` with a message naming `what` and the source, never a deep traceback."""
    from datasets import load_dataset

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return load_local(path, split)
        if path.exists():
            if path.stat().st_size == 0:
                raise error(f"{path}: the file is empty")
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
            if kind is None:
                raise error(f"{path}: unsupported file type (use .jsonl, .json, .parquet, .csv or a dataset dir)")
            return load_dataset(kind, data_files=str(path), split="train")
        if source.count("/") == 1 and not source.startswith((".", "/", "~")):
            return load_dataset(source, split=split)
        raise error(f"{what} not found: {source}")
    except error:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; name the source instead
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise error(f"could not load {what} {source!r}: {reason}") from None


def dataset_card(info: dict[str, Any], split: str, num_rows: int, body: str | None = None) -> str:
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
    if body is not None:
        return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n# {name}\n\n{body}"
    return f"""---
{yaml.safe_dump(meta, sort_keys=False)}---

# {name}

Generated with [synth](https://github.com/) {synth.__version__}: test-time search with a policy LLM,
answers verified against gold answers.

- Model: `{info.get("model")}`
- Strategy: `{info.get("config", {}).get("search", {}).get("strategy")}` with N = {info.get("config", {}).get("search", {}).get("n")}
- Problems: {num_rows}

## Results

| metric | value |
|---|---|
{table}

## Load it

```python
from datasets import load_dataset
ds = load_dataset("{info.get("load_path", "path/to/this/dataset")}", split="{split}")
```

Each row is one problem with all its completions: `completions`, `steps`, `answers`, `verified`,
`num_tokens`, plus the majority-vote answer and the strategy parameters. The full config of the
run is in this card's YAML header under `synth.config`.
"""


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- publishing


class PushError(ValueError):
    """A push that did not happen (or only partly); the message names the repo and the local copy."""


_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NOT_UPLOADED = ["rows.jsonl", "data.tmp/*", ".cache/*"]  # the journal duplicates data/


def is_repo_id(repo_id: str) -> bool:
    """'user/name' or 'org/name': one slash, both parts non-empty."""
    return repo_id.count("/") == 1 and all(repo_id.split("/"))


@dataclass
class PushConfig:
    """Where a command publishes its dataset, in transformers' push_to_hub vocabulary. Commands that
    push inherit these fields; the repo id and the token are checked before any work starts."""

    push_to_hub: bool = field(
        default=False, metadata={"group": "hub", "help": "Push the dataset to the Hub when the command finishes."}
    )
    hub_dataset_id: str | None = field(
        default=None,
        metadata={"group": "hub", "help": "Hub dataset repo, 'user/name' or 'org/name' (created if missing)."},
    )
    hub_revision: str | None = field(
        default=None,
        metadata={"group": "hub", "help": "Branch to push to (created from main when missing; default main)."},
    )
    hub_private: bool = field(
        default=False,
        metadata={"group": "hub", "help": "Create the repo private (an existing repo keeps its visibility)."},
    )
    hub_config_name: str | None = field(
        default=None,
        metadata={
            "group": "hub",
            "help": (
                "Dataset config: its files go to '<name>/' and the card lists it (default: named from the run's parameters)."
            ),
        },
    )
    hub_overwrite: bool = field(
        default=False,
        metadata={
            "group": "hub",
            "help": (
                "Replace different data already pushed to this config and revision (the local output_dir is not affected)."
            ),
        },
    )

    RENAMED = {"push_revision": "hub_revision", "push_private": "hub_private"}

    @classmethod
    def upgrade(cls, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """`push_to_hub: user/name` (the old form) means push_to_hub: true + hub_dataset_id."""
        value = data.get("push_to_hub")
        if isinstance(value, str) and is_repo_id(value):
            from synth.config import _warn_once

            _warn_once(f"'{prefix}push_to_hub <repo>' is deprecated: use --push_to_hub --hub_dataset_id {value}")
            data["push_to_hub"] = True
            data.setdefault("hub_dataset_id", value)
        return data

    def __post_init__(self):
        if self.hub_dataset_id is not None and not is_repo_id(self.hub_dataset_id):
            raise ValueError(f"hub_dataset_id {self.hub_dataset_id!r} must look like 'user/name' or 'org/name'")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (the Hub dataset repo, 'user/name')")
        if self.hub_config_name is not None and (
            not _CONFIG_NAME.fullmatch(self.hub_config_name) or self.hub_config_name == "data"
        ):
            raise ValueError(
                f"hub_config_name {self.hub_config_name!r}: use letters, digits, '_', '-' or '.' (and not 'data')"
            )


PUSH_KEYS = tuple(f.name for f in PushConfig.__dataclass_fields__.values())


def check_push(cfg: PushConfig, api: Any = None) -> None:
    """Before any work: a push that cannot happen (no token) is an error now, not after hours of generation."""
    if not cfg.push_to_hub:
        return
    from huggingface_hub import constants

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if not _has_token(api):
        raise PushError(
            f"cannot push to {cfg.hub_dataset_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); "
            "nothing was run"
        )
    if constants.HF_HUB_OFFLINE:
        log.warning(
            "HF_HUB_OFFLINE is set: the push to %s at the end will fail; the output stays local and "
            "`synth push` publishes it later",
            cfg.hub_dataset_id,
        )


def push_dataset(
    local_dir: str | Path,
    repo_id: str,
    private: bool = False,
    config_name: str | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    split: str = "train",
    api: Any = None,
) -> str:
    """Upload a dataset dir written by `write_dataset` to the Hub dataset repo `repo_id`; returns its URL.

    The data of config `config_name` lives in the folder `<config_name>/` (the default config at the
    root), and the root README's `configs` lists every config pushed so far. If that folder on
    `revision` (a branch, created from main when new) already holds files that differ from the local
    copy, the push is refused unless `overwrite` (stale data files are then deleted). Pushing the
    same files again is allowed, so a failed push is retried by running the same command.
    """
    local = Path(local_dir).resolve()
    files = _local_files(local)
    if not any(p.startswith("data/") and p.endswith(".parquet") for p in files) or "README.md" not in files:
        raise PushError(f"{local}: no data/*.parquet and README.md to push (is it a synth dataset dir?)")
    name = config_name or "default"
    if not _CONFIG_NAME.fullmatch(name) or name == "data":
        raise PushError(f"config_name {name!r}: use letters, digits, '_', '-' or '.' (and not 'data')")
    if not is_repo_id(repo_id):
        raise PushError(f"repo id {repo_id!r} must look like 'user/name' or 'org/name'")
    intact = f"the local copy at {local} is intact; rerun the same command to retry"
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if not _has_token(api):
        raise PushError(
            f"cannot push to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN); {intact}"
        )
    try:
        return _push(api, local, files, repo_id, private, name, revision or "main", overwrite, split)
    except PushError:
        raise
    except Exception as err:  # noqa: BLE001 - network, auth and server errors all end here, named
        if not _is_hub_error(err):
            raise
        raise PushError(f"{_describe(err, repo_id)}; {intact}") from None


def _has_token(api: Any) -> bool:
    from huggingface_hub import get_token

    return bool(getattr(api, "token", None) or get_token())


def _is_hub_error(err: Exception) -> bool:
    try:
        import httpx2

        if isinstance(err, httpx2.HTTPError):
            return True
    except ImportError:  # older huggingface_hub stacks
        pass
    return isinstance(err, OSError)  # ConnectionError, OfflineModeIsEnabled, HfHubHTTPError


def _describe(err: Exception, repo_id: str) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    if status in (401, 403):
        return f"the Hub refused to let this token write to {repo_id} (HTTP {status}: {reason})"
    if status is not None:
        return f"pushing to {repo_id} failed (HTTP {status}: {reason})"
    return f"cannot reach the Hugging Face Hub to push {repo_id} ({type(err).__name__}: {reason})"


def _local_files(local: Path) -> dict[str, Path]:
    import fnmatch

    if not local.is_dir():
        raise PushError(f"{local}: not a directory")
    out = {}
    for p in sorted(local.rglob("*")):
        rel = p.relative_to(local).as_posix()
        if p.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in _NOT_UPLOADED):
            out[rel] = p
    return out


def _push(
    api: Any,
    local: Path,
    files: dict[str, Path],
    repo_id: str,
    private: bool,
    name: str,
    branch: str,
    overwrite: bool,
    split: str,
) -> str:
    from huggingface_hub.errors import EntryNotFoundError

    prefix = "" if name == "default" else f"{name}/"
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    remote = _remote_files(api, repo_id, branch)
    if remote is not None and branch != "main":
        main_files = _remote_files(api, repo_id, "main") or {}
        if _ids(_owned(remote, prefix, files)) == _ids(_owned(main_files, prefix, files)):
            remote = {}  # what is there was inherited from main when the branch was made (e.g. by a push that failed)
    owned = _owned(remote or {}, prefix, files)
    differ = sorted(
        p for p, f in owned.items() if p[len(prefix) :] not in files or not _same(f, files[p[len(prefix) :]])
    )
    if differ and not overwrite:
        where = f"{repo_id}@{branch}" + (f" (config {name!r})" if prefix else "")
        raise PushError(
            f"{where} already holds different data ({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}); "
            f"nothing was changed. Pass --overwrite true to replace it, or pick another config_name or revision"
        )
    if remote is None:
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(local),
        path_in_repo=prefix.rstrip("/") or None,
        repo_type="dataset",
        revision=branch,
        ignore_patterns=_NOT_UPLOADED + ([] if prefix else ["README.md"]),
        delete_patterns=["data/*"],
        commit_message=f"synth: upload config {name}",
    )
    try:
        existing = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=branch)).read_text()
    except EntryNotFoundError:
        existing = None
    readme = root_card((local / "README.md").read_text(), existing, name, prefix, split)
    if readme != existing:
        api.upload_file(
            path_or_fileobj=readme.encode(),
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
            revision=branch,
            commit_message=f"synth: list config {name} in the card",
        )
    return f"https://huggingface.co/datasets/{repo_id}" + (f"/tree/{branch}" if branch != "main" else "")


def _remote_files(api: Any, repo_id: str, branch: str) -> dict[str, Any] | None:
    """path -> RepoFile on `branch`; None when the branch does not exist."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        return {
            f.path: f
            for f in api.list_repo_tree(repo_id, recursive=True, revision=branch, repo_type="dataset")
            if hasattr(f, "blob_id")
        }
    except RevisionNotFoundError:
        return None


def _owned(remote: dict[str, Any], prefix: str, files: dict[str, Path]) -> dict[str, Any]:
    """The remote files this push would replace: the config's data/ and any path it uploads (not the root card)."""
    ours = {prefix + p for p in files} - {"README.md"}
    return {p: f for p, f in remote.items() if p.startswith(prefix + "data/") or p in ours}


def _ids(remote: dict[str, Any]) -> dict[str, str]:
    return {p: f.blob_id for p, f in remote.items()}


def _same(remote: Any, path: Path) -> bool:
    data = path.read_bytes()
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        sha = lfs["sha256"] if isinstance(lfs, dict) and "sha256" in lfs else getattr(lfs, "sha256", None)
        return sha == hashlib.sha256(data).hexdigest()
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def split_card(text: str | None) -> tuple[dict[str, Any], str]:
    """(YAML metadata, markdown body) of a dataset card."""
    if text and text.startswith("---"):
        end = text.find("\n---", 3)
        if end > 0:
            meta = yaml.safe_load(text[3:end]) or {}
            return (meta if isinstance(meta, dict) else {}), text[end + 4 :].lstrip("\n")
    return {}, text or ""


def root_card(local_card: str, existing: str | None, name: str, prefix: str, split: str = "train") -> str:
    """The repo's README: the existing card (or ours) with config `name` listed (replacing an old entry).

    Pushing the default config also brings its own card body and metadata; a named config only
    adds its `configs` entry to a card that is already there.
    """
    local_meta, local_body = split_card(local_card)
    old_meta, old_body = split_card(existing)
    meta, body = (local_meta, local_body) if existing is None or name == "default" else (old_meta, old_body)
    entry = {"config_name": name, "data_files": [{"split": split, "path": f"{prefix}data/{split}-*.parquet"}]}
    configs = [c for c in old_meta.get("configs", []) if c.get("config_name") != name] + [entry]
    meta = {
        **meta,
        "configs": sorted(configs, key=lambda c: (c.get("config_name") != "default", c.get("config_name", ""))),
    }
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n{body}"


def push(cfg: PushConfig, local_dir: str | Path, default_config: str = "default", split: str = "train") -> str:
    """Push a dataset dir a command just wrote, as `cfg` says; prints and returns the URL."""
    name = cfg.hub_config_name or default_config
    url = push_dataset(
        local_dir,
        cfg.hub_dataset_id,
        private=cfg.hub_private,
        config_name=name,
        revision=cfg.hub_revision,
        overwrite=cfg.hub_overwrite,
        split=split,
    )
    print(f"pushed {local_dir} to {url} (config {name})")
    return url


def config_name(*parts: tuple[str, Any]) -> str:
    """A Hub config name from a run's parameters, search-and-learn style: T-0.8--n-16--seed-0."""
    return "--".join(f"{k}-{v}" if k else str(v) for k, v in parts if v is not None).replace("/", "-")
