"""Datasets in Hugging Face conventions: parquet shards + a README.md card with YAML metadata."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import synth
from synth import cards

log = logging.getLogger(__name__)


def write_dataset(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    card: dict[str, Any],
    kind: str | None = None,
    split: str = "train",
    rows_per_shard: int = 50_000,
    body: str | None = None,
    extra: str = "",
) -> Path:
    """Write ``rows`` as ``data/{split}-0000i-of-0000n-<fingerprint>.parquet`` and a dataset card.

    ``kind`` names the row schema (`synth.formats.features`): every shard is written with it. The file
    names carry a fingerprint of the data, so ``load_dataset(out_dir)`` never reads back a cached older
    dataset of the same directory name. ``body`` replaces the card's default markdown (which describes a
    `synth generate` dataset); ``extra`` is markdown added at its end.
    """
    from datasets import Dataset

    from synth.formats import features

    schema = features(kind) if kind else None
    out = Path(out_dir)
    data_dir, tmp = out / "data", out / "data.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = max(1, -(-len(rows) // rows_per_shard))
    written, num_bytes, feats = [], 0, schema
    for i in range(shards):
        part = rows[i * rows_per_shard : (i + 1) * rows_per_shard]
        if schema is not None:
            extra_keys = {k for r in part for k in r} - set(schema)
            if extra_keys:
                raise ValueError(f"{kind} rows have columns outside their schema: {sorted(extra_keys)}")
            ds = Dataset.from_dict({k: [r.get(k) for r in part] for k in schema}, features=schema)
        else:
            ds = Dataset.from_list(part)
        feats = feats or ds.features
        num_bytes += ds.data.nbytes
        path = tmp / f"{split}-{i:05d}-of-{shards:05d}.parquet"
        ds.to_parquet(str(path))
        written.append(path)
    digest = hashlib.sha256()
    for path in written:
        digest.update(path.read_bytes())
    fingerprint = digest.hexdigest()[:12]
    for path in written:
        path.rename(path.with_name(f"{path.stem}-{fingerprint}.parquet"))
    shutil.rmtree(data_dir, ignore_errors=True)
    tmp.rename(data_dir)
    info = {"name": "synth dataset", **card, "kind": kind, "synth_version": synth.__version__}
    text = cards.render(
        info,
        (body if body is not None else generate_body(info, len(rows))) + (f"\n{extra}" if extra else ""),
        license=card.get("license") or cards.dataset_license(info.get("model"), _sources(rows)),
        num_rows=len(rows),
        split=split,
        data_pattern=f"data/{split}-*-{fingerprint}.parquet",
        dataset_info=_dataset_info(
            feats, split, len(rows), num_bytes, sum(p.stat().st_size for p in data_dir.glob("*.parquet"))
        ),
        load_target=str(out.resolve()),
    )
    (out / "README.md").write_text(text)
    return out


def _sources(rows: list[dict[str, Any]]) -> list[str]:
    """The problem sources of rows ('reasoning_gym/chain_sum' -> 'reasoning_gym'), for the license."""
    return sorted({str(r["source"]) for r in rows if r.get("source")})


def _dataset_info(feats, split: str, num_rows: int, num_bytes: int, download_size: int) -> dict[str, Any]:
    """The card's `dataset_info`: features and split sizes (what `datasets` hashes a local dataset by)."""
    from datasets.info import DatasetInfo
    from datasets.splits import SplitDict, SplitInfo

    info = DatasetInfo(
        features=feats,
        splits=SplitDict({split: SplitInfo(split, num_bytes=num_bytes, num_examples=num_rows)}),
        download_size=download_size,
        dataset_size=num_bytes,
    )
    return info._to_yaml_dict()


def generate_body(info: dict[str, Any], num_rows: int) -> str:
    """The card body of a `synth generate` (or merged) run: what made it and its results."""
    search = (info.get("config") or {}).get("search", {})
    table = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in (info.get("summary") or {}).items())
    return f"""Generated with synth {synth.__version__}: test-time search with a policy LLM, answers verified against
gold answers.

- Model: `{info.get("model")}`
- Strategy: `{search.get("strategy")}` with N = {search.get("n")}
- Problems: {num_rows}

## Results

| metric | value |
|---|---|
{table}

Each row is one problem with all its completions: `completions`, `steps`, `answers`, `verified`,
`num_tokens`, plus the answer each selector picks and the strategy parameters. The full config of the
run is in this card's YAML header under `synth.config`.
"""


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
            return load_hub(source, None, split, error, what)
        raise error(f"{what} not found: {source}")
    except error:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; name the source instead
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise error(f"could not load {what} {source!r}: {reason}") from None


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- publishing


class PushError(ValueError):
    """A push that did not happen (or only partly); the message names the repo and the local copy."""


_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Not published: the journal (duplicates data/), run bookkeeping, and configs holding local paths (the card has them scrubbed).
_NOT_UPLOADED = [
    "rows.jsonl",
    "data.tmp/*",
    ".cache/*",
    ".synth-run.json",
    ".synth.lock",
    "config.yaml",
    "*.tmp",
    "source_config.yaml",
    "done.json",
]


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
    """One commit: the config's files (its card rewritten for the Hub), stale data files deleted, the root card."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import EntryNotFoundError

    prefix = "" if name == "default" else f"{name}/"
    card = cards.for_hub((local / "README.md").read_text(), repo_id, name, prefix, split)
    uploads: dict[str, bytes] = {prefix + rel: path.read_bytes() for rel, path in files.items() if rel != "README.md"}
    if prefix:
        uploads[prefix + "README.md"] = card.encode()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    remote = _remote_files(api, repo_id, branch)
    main_files = (_remote_files(api, repo_id, "main") or {}) if branch != "main" else {}
    current = remote if remote is not None else main_files  # a new branch starts from main's files
    owned = _owned(current, prefix, uploads)
    # what a branch inherited from main (when it was made, e.g. by a push that failed) is not its own data
    guarded = {} if branch != "main" and _ids(owned) == _ids(_owned(main_files, prefix, uploads)) else owned
    differ = sorted(p for p, f in guarded.items() if p not in uploads or not _same(f, uploads[p]))
    if differ and not overwrite:
        where = f"{repo_id}@{branch}" + (f" (config {name!r})" if prefix else "")
        raise PushError(
            f"{where} already holds different data ({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}); "
            "nothing was changed. Pass --hub_overwrite true to replace it, or pick another hub_config_name or hub_revision"
        )
    if remote is None:
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    try:
        existing = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=branch)).read_text()
    except EntryNotFoundError:
        existing = None
    operations = [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=data)
        for p, data in sorted(uploads.items())
        if p not in current or not _same(current[p], data)
    ]
    operations += [CommitOperationDelete(path_in_repo=p) for p in sorted(owned) if p not in uploads]
    readme = cards.root_card(card, existing, name, prefix, split)
    if readme != existing:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme.encode()))
    if operations:
        api.create_commit(
            repo_id,
            operations=operations,
            commit_message=f"synth: push config {name}",
            revision=branch,
            repo_type="dataset",
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


def _owned(remote: dict[str, Any], prefix: str, uploads: dict[str, bytes]) -> dict[str, Any]:
    """The remote files this push would replace: the config's data/ and any path it uploads (not the root card)."""
    ours = set(uploads) - {"README.md"}
    return {p: f for p, f in remote.items() if p.startswith(prefix + "data/") or p in ours}


def _ids(remote: dict[str, Any]) -> dict[str, str]:
    return {p: f.blob_id for p, f in remote.items()}


def _same(remote: Any, data: bytes) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        sha = lfs["sha256"] if isinstance(lfs, dict) and "sha256" in lfs else getattr(lfs, "sha256", None)
        return sha == hashlib.sha256(data).hexdigest()
    return remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


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


# ---------------------------------------------------------------- reading back from the Hub


def parse_hub_spec(spec: str) -> tuple[str, str, str | None] | None:
    """'user/name[:config][@revision]' -> (repo id, config pattern, revision); None when it is no such spec."""
    m = re.fullmatch(r"([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.*?\[\]-]+))?(?:@([\w./-]+))?", spec)
    return (m.group(1), m.group(2) or "default", m.group(3)) if m else None


def fetch_configs(spec: str, dest: str | Path, api: Any = None) -> list[Path]:
    """Download the configs of a Hub dataset that `spec` names ('user/name:config@revision'; the config may be
    a glob such as 'best_of_n--T-0.8--n-8--seed-0--shard-*') into `dest`; one local dataset dir per config."""
    import fnmatch

    parsed = parse_hub_spec(spec)
    if parsed is None:
        raise PushError(f"{spec!r} is no local dir nor a Hub dataset 'user/name[:config][@revision]'")
    repo_id, pattern, revision = parsed
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        readme = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)).read_text()
        names = [c.get("config_name") for c in cards.split_card(readme)[0].get("configs", [])]
        chosen = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not chosen:
            raise PushError(
                f"{repo_id}{'@' + revision if revision else ''} has no config matching {pattern!r} (it has {names})"
            )
        out = []
        for name in chosen:
            prefix = "" if name == "default" else f"{name}/"
            local = Path(dest) / name
            api.snapshot_download(
                repo_id,
                repo_type="dataset",
                revision=revision,
                local_dir=str(local),
                allow_patterns=[f"{prefix}data/*", f"{prefix}README.md"],
            )
            out.append(local / prefix if prefix else local)
        return out
    except PushError:
        raise
    except Exception as err:  # noqa: BLE001 - network, auth and server errors all end here, named
        if not _is_hub_error(err):
            raise
        raise PushError(f"could not download {spec!r}: {_describe(err, repo_id)}") from None


def offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached, found at once (HF_HUB_OFFLINE, or its host does not resolve), else None.
    Loading from an unreachable Hub otherwise takes many seconds of retries before it fails."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    failed: list[str] = []

    def resolve():
        try:
            socket.getaddrinfo(host, 443)
        except OSError as err:
            failed.append(str(err))

    probe = threading.Thread(target=resolve, daemon=True)
    probe.start()
    probe.join(timeout)
    if probe.is_alive():
        return f"{host} does not resolve (no answer in {timeout:.0f} s)"
    return f"{host} does not resolve ({failed[0]})" if failed else None


def load_hub(dataset: str, config: str | None, split: str, error: type[Exception], what: str):
    """A split of a Hub dataset as a `datasets.Dataset`; offline (or any failure) is one `error` naming `what`."""
    from datasets import load_dataset

    if not _offline_mode():  # offline mode reads the local cache, which needs no network
        require_online(f"{what} {dataset!r}", error)
    try:
        return load_dataset(dataset, config, split=split)
    except Exception as err:  # noqa: BLE001 - missing, gated, not cached: all end the same way, named
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise error(
            f"could not load {what} {dataset!r} (split {split!r}) from the Hugging Face Hub: {reason}"
        ) from None


def _offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def require_online(what: str, error: type[Exception]) -> None:
    reason = offline_reason()
    if reason:
        raise error(
            f"cannot load {what} from the Hugging Face Hub: offline ({reason}). Download it where there is "
            "network and use a local file or dir instead (with HF_HUB_OFFLINE=1 a cached copy is used)"
        )
