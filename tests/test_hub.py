"""Publishing, against an in-memory stand-in for `huggingface_hub.HfApi` (no network)."""

import fnmatch
import hashlib
from pathlib import Path

import httpx2
import pytest
import yaml
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RevisionNotFoundError

from synth.cards import root_card, split_card
from synth.commands.cli import main
from synth.hub import PushError, push_dataset, write_dataset


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api"))


class RepoFile:
    def __init__(self, path: str, data: bytes):
        self.path, self.size = path, len(data)
        self.blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.lfs = {"sha256": hashlib.sha256(data).hexdigest()} if path.endswith(".parquet") else None


class FakeHfApi:
    """Repos as {branch: {path: bytes}}; records the calls that reach it."""

    def __init__(
        self, tmp: Path, token: str | None = "hf_test", fail_on: str | None = None, error: Exception | None = None
    ):
        self.token, self.tmp, self.fail_on, self.error = token, tmp, fail_on, error
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.calls: list[str] = []

    def _call(self, name):
        self.calls.append(name)
        if name == self.fail_on:
            raise self.error

    def _branch(self, repo_id, revision):
        branches = self.repos[repo_id]
        if (revision or "main") not in branches:
            raise RevisionNotFoundError(f"{revision} not found", response=_response(404))
        return branches[revision or "main"]

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False):
        self._call("create_repo")
        assert repo_type == "dataset" and exist_ok
        self.repos.setdefault(repo_id, {"main": {".gitattributes": b"*.parquet filter=lfs\n"}})

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, repo_type=None):
        self._call("list_repo_tree")
        return [RepoFile(p, d) for p, d in sorted(self._branch(repo_id, revision).items())]

    def create_branch(self, repo_id, *, branch, revision=None, repo_type=None, exist_ok=False):
        self._call("create_branch")
        self.repos[repo_id].setdefault(branch, dict(self.repos[repo_id]["main"]))

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        path_in_repo=None,
        repo_type=None,
        revision=None,
        ignore_patterns=None,
        delete_patterns=None,
        commit_message=None,
    ):
        self._call("upload_folder")
        files = self._branch(repo_id, revision)
        prefix = f"{path_in_repo}/" if path_in_repo else ""
        added = {}
        for p in sorted(Path(folder_path).rglob("*")):
            rel = p.relative_to(folder_path).as_posix()
            if p.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in ignore_patterns or []):
                added[prefix + rel] = p.read_bytes()
        for path in list(files):
            if (
                path.startswith(prefix)
                and path not in added
                and any(fnmatch.fnmatch(path[len(prefix) :], pat) for pat in delete_patterns or [])
            ):
                del files[path]
        files.update(added)

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, revision=None):
        self._call("hf_hub_download")
        files = self._branch(repo_id, revision)
        if filename not in files:
            raise RemoteEntryNotFoundError(f"{filename} not found", response=_response(404))
        out = self.tmp / f"download-{len(self.calls)}-{filename}"
        out.write_bytes(files[filename])
        return str(out)

    def upload_file(
        self, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, revision=None, commit_message=None
    ):
        self._call("upload_file")
        self._branch(repo_id, revision)[path_in_repo] = path_or_fileobj

    def create_commit(self, repo_id, *, operations, commit_message=None, revision=None, repo_type=None):
        self._call("create_commit")
        files = self._branch(repo_id, revision)
        for op in operations:
            if hasattr(op, "path_or_fileobj"):
                data = op.path_or_fileobj
                files[op.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
            else:
                del files[op.path_in_repo]

    def snapshot_download(self, repo_id, *, repo_type=None, revision=None, allow_patterns=None, local_dir=None):
        self._call("snapshot_download")
        out = Path(local_dir)
        for path, data in self._branch(repo_id, revision).items():
            if any(fnmatch.fnmatch(path, pat) for pat in allow_patterns or ["*"]):
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                (out / path).write_bytes(data)
        return str(out)

    def card(self, repo_id, branch="main"):
        return split_card(self.repos[repo_id][branch]["README.md"].decode())[0]


def parquet(files, prefix=""):
    """The parquet data files of a config in a repo (their names carry a fingerprint of the data)."""
    return sorted(p for p in files if p.startswith(f"{prefix}data/") and p.endswith(".parquet"))


def local_parquet(path):
    return {f"data/{f.name}": f.read_bytes() for f in sorted((Path(path) / "data").glob("*.parquet"))}


def make_dataset(path, rows=None, rows_per_shard=50_000):
    rows = rows or [{"prompt": "What is 2 + 3?", "completion": "5"}, {"prompt": "Ünïcödé?", "completion": "✓"}]
    write_dataset(rows, path, {"name": "test data", "model": "tiny"}, rows_per_shard=rows_per_shard)
    (Path(path) / "rows.jsonl").write_text("{}\n")  # a run's journal: never uploaded
    return Path(path)


@pytest.fixture
def api(tmp_path):
    return FakeHfApi(tmp_path)


@pytest.fixture(autouse=True)
def no_stored_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)


def test_push_default_config_sequence_and_files(tmp_path, api):
    local = make_dataset(tmp_path / "ds")
    url = push_dataset(local, "me/data", api=api)
    assert url == "https://huggingface.co/datasets/me/data"
    assert api.calls == ["create_repo", "list_repo_tree", "hf_hub_download", "create_commit"]  # one commit
    files = api.repos["me/data"]["main"]
    (shard,) = parquet(files)
    assert sorted(files) == [".gitattributes", "README.md", shard] and {shard: files[shard]} == local_parquet(local)
    meta = api.card("me/data")
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    readme = files["README.md"].decode()
    assert "test data" in readme and 'load_dataset("me/data", split="train")' in readme and str(tmp_path) not in readme


def test_named_configs_live_in_folders_and_are_listed(tmp_path, api):
    push_dataset(make_dataset(tmp_path / "a"), "me/data", config_name="easy", api=api)
    push_dataset(
        make_dataset(tmp_path / "b", [{"prompt": "x", "completion": "y"}]), "me/data", config_name="hard", api=api
    )
    push_dataset(make_dataset(tmp_path / "c"), "me/data", api=api)
    files = api.repos["me/data"]["main"]
    assert parquet(files, "easy/") and parquet(files, "hard/") and parquet(files) and "easy/README.md" in files
    assert 'load_dataset("me/data", "easy", split="train")' in files["easy/README.md"].decode()
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in api.card("me/data")["configs"]}
    assert configs == {
        "default": "data/train-*.parquet",
        "easy": "easy/data/train-*.parquet",
        "hard": "hard/data/train-*.parquet",
    }
    assert [c["config_name"] for c in api.card("me/data")["configs"]][0] == "default"


def test_repush_same_data_is_allowed_different_data_refused_unless_overwrite(tmp_path, api):
    push_dataset(make_dataset(tmp_path / "a", rows_per_shard=1), "me/data", config_name="cfg", api=api)
    before = dict(api.repos["me/data"]["main"])
    push_dataset(tmp_path / "a", "me/data", config_name="cfg", api=api)  # a retry: same files
    assert api.repos["me/data"]["main"] == before
    other = make_dataset(tmp_path / "b", [{"prompt": "new", "completion": "data"}])
    with pytest.raises(
        PushError, match=r"me/data@main \(config 'cfg'\) already holds different data.*--hub_overwrite true"
    ):
        push_dataset(other, "me/data", config_name="cfg", api=api)
    assert api.repos["me/data"]["main"] == before
    push_dataset(other, "me/data", config_name="cfg", overwrite=True, api=api)
    data = parquet(api.repos["me/data"]["main"], "cfg/")
    assert [d[len("cfg/") :] for d in data] == list(local_parquet(other))  # the stale second shard is gone


def test_revision_is_a_branch(tmp_path, api):
    push_dataset(make_dataset(tmp_path / "a"), "me/data", api=api)
    main_before = dict(api.repos["me/data"]["main"])
    v2 = make_dataset(tmp_path / "b", [{"prompt": "v2", "completion": "v2"}])
    url = push_dataset(v2, "me/data", revision="v2", api=api)
    assert url.endswith("/tree/v2") and "create_branch" in api.calls
    assert api.repos["me/data"]["main"] == main_before
    assert {p: api.repos["me/data"]["v2"][p] for p in parquet(api.repos["me/data"]["v2"])} == local_parquet(v2)
    push_dataset(v2, "me/data", revision="v2", api=api)  # retry
    with pytest.raises(PushError, match="me/data@v2 already holds different data"):
        push_dataset(tmp_path / "a", "me/data", revision="v2", api=api)


def test_retry_after_a_push_that_failed_after_creating_the_branch(tmp_path, api):
    push_dataset(make_dataset(tmp_path / "a"), "me/data", api=api)
    v2 = make_dataset(tmp_path / "b", [{"prompt": "v2", "completion": "v2"}])
    api.fail_on, api.error = "create_commit", httpx2.ConnectError("connection reset")
    with pytest.raises(PushError, match="cannot reach the Hugging Face Hub"):
        push_dataset(v2, "me/data", revision="v2", api=api)
    assert "v2" in api.repos["me/data"]  # the branch exists, holding main's files
    api.fail_on = None
    push_dataset(v2, "me/data", revision="v2", api=api)
    assert {p: api.repos["me/data"]["v2"][p] for p in parquet(api.repos["me/data"]["v2"])} == local_parquet(v2)


def test_no_token_fails_fast_with_the_local_path(tmp_path):
    local = make_dataset(tmp_path / "ds")
    api = FakeHfApi(tmp_path, token=None)
    with pytest.raises(PushError) as exc:
        push_dataset(local, "me/data", api=api)
    assert "me/data" in str(exc.value) and "no Hugging Face token" in str(exc.value)
    assert f"the local copy at {local.resolve()} is intact" in str(exc.value)
    assert api.calls == []
    with pytest.raises(PushError, match="no Hugging Face token"):  # the real HfApi: fails before any request
        push_dataset(local, "me/data")


def test_connection_error_is_clear_and_retry_works(tmp_path):
    local = make_dataset(tmp_path / "ds")
    api = FakeHfApi(tmp_path, fail_on="create_repo", error=httpx2.ConnectError("[Errno -2] Name or service not known"))
    with pytest.raises(PushError) as exc:
        push_dataset(local, "me/data", api=api)
    msg = str(exc.value)
    assert (
        "cannot reach the Hugging Face Hub to push me/data" in msg and str(local.resolve()) in msg and "intact" in msg
    )
    api.fail_on = None
    push_dataset(local, "me/data", api=api)
    assert parquet(api.repos["me/data"]["main"])


def test_real_hfapi_unreachable_endpoint_is_clear(tmp_path):
    from huggingface_hub import HfApi

    local = make_dataset(tmp_path / "ds")
    with pytest.raises(PushError, match=r"cannot reach the Hugging Face Hub to push me/data \(ConnectError"):
        push_dataset(local, "me/data", api=HfApi(endpoint="http://127.0.0.1:9", token="hf_fake"))


def test_auth_error_and_bad_inputs(tmp_path):
    local = make_dataset(tmp_path / "ds")
    api = FakeHfApi(tmp_path, fail_on="create_repo", error=HfHubHTTPError("401 Unauthorized", response=_response(401)))
    with pytest.raises(PushError, match="refused to let this token write to me/data"):
        push_dataset(local, "me/data", api=api)
    with pytest.raises(PushError, match="no data/\\*.parquet"):
        push_dataset(tmp_path, "me/data", api=FakeHfApi(tmp_path))
    with pytest.raises(PushError, match="config_name 'a b'"):
        push_dataset(local, "me/data", config_name="a b", api=FakeHfApi(tmp_path))
    with pytest.raises(PushError, match="must look like 'user/name'"):
        push_dataset(local, "data", api=FakeHfApi(tmp_path))


def test_root_card_merges_configs():
    local = "---\nconfigs:\n- config_name: default\n  data_files: []\ntags: [synth]\n---\n\n# new\n"
    existing = "---\nconfigs:\n- config_name: old\n  data_files: [{split: train, path: old/data/train-*.parquet}]\nlicense: mit\n---\n\n# Mine\n"
    meta, body = split_card(root_card(local, existing, "x", "x/"))
    assert (
        [c["config_name"] for c in meta["configs"]] == ["old", "x"] and meta["license"] == "mit" and body == "# Mine\n"
    )
    meta, body = split_card(root_card(local, existing, "default", ""))
    assert [c["config_name"] for c in meta["configs"]] == ["default", "old"] and body == "# new\n"
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert split_card("no front matter") == ({}, "no front matter")


def test_push_command_and_filter_push_option(tmp_path, api, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    local = make_dataset(tmp_path / "ds")
    assert main(["push", "--dataset", str(local), "--repo_id", "me/data", "--config_name", "v1"]) == 0
    assert "pushed" in capsys.readouterr().out and parquet(api.repos["me/data"]["main"], "v1/")
    assert main(["push", "--dataset", str(local)]) == 2

    gen = [
        {
            "id": "p",
            "problem": "What is 2 + 3?",
            "gold_answer": "5",
            "completions": ["It is \\boxed{5}"],
            "answers": ["5"],
            "verified": [True],
            "num_tokens": [4],
            "finished": [True],
            "model": "tiny",
            "strategy": "best_of_n",
            "n": 1,
        }
    ]
    write_dataset(gen, tmp_path / "gen", {"name": "gen"})
    out = tmp_path / "sft"
    args = [
        "filter",
        "--dataset",
        str(tmp_path / "gen"),
        "--output_dir",
        str(out),
        "--push_to_hub",
        "me/data",
        "--config_name",
        "sft",
    ]
    assert main(args) == 0
    assert "to https://huggingface.co/datasets/me/data (config sft)" in capsys.readouterr().out
    assert 'load_dataset("me/data", "sft", split="train")' in api.repos["me/data"]["main"]["sft/README.md"].decode()
    # offline: the local dataset is written, the error says so; the same command works once back online
    api.fail_on, api.error = "create_repo", httpx2.ConnectError("offline")
    assert main(args) == 2
    assert "the local copy at" in capsys.readouterr().err and (out / "data").is_dir()
    api.fail_on = None
    assert main(args) == 0
    card = yaml.safe_load(api.repos["me/data"]["main"]["README.md"].decode().split("---")[1])
    assert {c["config_name"] for c in card["configs"]} == {"v1", "sft"}
