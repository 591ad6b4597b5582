"""Hub-native datasets: cards the Hub reads, loads that never return another run's rows, one schema per row
kind, cards rewritten for the Hub on push, shards merged back from Hub revisions, eval on shared problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset
from fakes import AnswerPolicy
from huggingface_hub import DatasetCard
from test_hub import FakeHfApi, parquet

from synth.commands.cli import main
from synth.hub import read_rows, write_dataset
from synth.journal import Journal
from synth.problems import load_pool


@pytest.fixture
def fake_policy(monkeypatch):
    monkeypatch.setattr(
        "synth.generate.run.load_policy",
        lambda cfg: AnswerPolicy({p.problem: p.answer for p in load_pool(cfg.pool)}, correct=(0, 2)),
    )


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub behind `huggingface_hub.HfApi()`, with a token."""
    import huggingface_hub

    api = FakeHfApi(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    return api


GEN = ["generate", "--pool.num_problems", "6", "--pool.seed", "3", "--search.n", "4", "--problems_per_batch", "2"]


def sft_rows(n, text="b"):
    return [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": text}],
            "id": f"p{i}",
            "source": "t",
            "gold_answer": "1",
            "answer": "1",
            "verified": True,
            "score": None,
            "num_tokens": 3,
        }
        for i in range(n)
    ]


def test_load_dataset_never_returns_another_runs_rows(tmp_path):
    cache = str(tmp_path / "hf-cache")  # one clean datasets cache for every load below
    write_dataset(sft_rows(11), tmp_path / "r/round-1/sft_data", {"name": "round 1"}, kind="sft")
    write_dataset(sft_rows(22), tmp_path / "r/round-2/sft_data", {"name": "round 2"}, kind="sft")
    assert len(load_dataset(str(tmp_path / "r/round-1/sft_data"), split="train", cache_dir=cache)) == 11
    assert len(load_dataset(str(tmp_path / "r/round-2/sft_data"), split="train", cache_dir=cache)) == 22
    # rewritten in place with as many rows of other text: read back fresh, not from the cache
    write_dataset(sft_rows(22, "c"), tmp_path / "r/round-2/sft_data", {"name": "round 2"}, kind="sft")
    again = load_dataset(str(tmp_path / "r/round-2/sft_data"), split="train", cache_dir=cache)
    assert again[0]["completion"][0]["content"] == "c"


def test_shards_share_one_schema(tmp_path):
    from fakes import AnswerPolicy  # noqa: F401 - the generate row kind, written by hand here

    base = {
        "id": "a",
        "problem": "q",
        "gold_answer": "1",
        "source": "t",
        "completions": ["x"],
        "answers": ["1"],
        "verified": [True],
        "finished": [True],
        "num_tokens": [2],
        "majority_answer": "1",
        "majority_verified": True,
    }
    rows = [{**base, "scores": None}, {**base, "id": "b", "scores": [0.5]}]  # all-null in shard 1, typed in shard 2
    write_dataset(rows, tmp_path / "d", {"name": "x"}, kind="generate", rows_per_shard=1)
    ds = load_dataset(str(tmp_path / "d"), split="train", cache_dir=str(tmp_path / "c"))
    assert ds["scores"] == [None, [0.5]] and len(list((tmp_path / "d" / "data").glob("*.parquet"))) == 2
    with pytest.raises(ValueError, match="outside their schema"):
        write_dataset([{**base, "surprise": 1}], tmp_path / "e", {"name": "x"}, kind="generate")


def _card(path):
    data = DatasetCard.load(Path(path) / "README.md").data.to_dict()
    assert data["dataset_info"]["splits"][0]["num_examples"] > 0 and data["dataset_info"]["features"]
    assert data["pretty_name"] and data["license"] and data["size_categories"] and data["language"] == ["en"]
    assert "github.com/)" not in (Path(path) / "README.md").read_text()  # no placeholder links
    return data


def test_every_card_parses_with_dataset_info(tmp_path, fake_policy):
    from test_label import RolloutPolicy, run_dir

    from synth.prm.label import LabelConfig, label

    for i in range(2):
        assert main([*GEN, "--output_dir", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]) == 0
    assert (
        main(["merge", "--runs", str(tmp_path / "s0"), str(tmp_path / "s1"), "--output_dir", str(tmp_path / "m")]) == 0
    )
    gen = _card(tmp_path / "m")
    assert gen["license"] == "apache-2.0"  # SmolLM2 and reasoning-gym are both Apache-2.0
    assert gen["synth"]["summary"]["n"] == 4
    for fmt in ("sft", "stepwise", "preference"):
        assert (
            main(["filter", "--dataset", str(tmp_path / "m"), "--format", fmt, "--output_dir", str(tmp_path / fmt)])
            == 0
        )
        card = _card(tmp_path / fmt)
        assert isinstance(card["synth"]["source"]["n"], int)  # not '4'
        assert "no gold" not in (tmp_path / fmt / "README.md").read_text()  # every problem has a gold answer
    data = run_dir(tmp_path, {"What is 3+4?": [(["ok1", "The answer is 7"], True)]})
    label(
        LabelConfig(dataset=str(data), rollouts=2, output_dir=str(tmp_path / "labels")),
        policy=RolloutPolicy({"What is 3+4?": "7"}),
    )
    assert {"name": "labels", "list": "bool"} in _card(tmp_path / "labels")["dataset_info"]["features"]


def test_a_pushed_card_names_the_hub_and_no_local_path(tmp_path, fake_policy, hub):
    run = tmp_path / "run"
    assert main([*GEN, "--output_dir", str(run), "--push_to_hub", "--hub_dataset_id", "me/arith"]) == 0
    files = hub.repos["me/arith"]["main"]
    name = "best_of_n--T-0.8--n-4--seed-0"
    card = files[f"{name}/README.md"].decode()
    assert f'load_dataset("me/arith", "{name}", split="train")' in card
    for path, data in files.items():
        assert str(tmp_path) not in data.decode(errors="ignore") and "/work/" not in data.decode(errors="ignore"), path
    assert not any(p.endswith(("rows.jsonl", "config.yaml", ".synth-run.json", ".synth.lock")) for p in files)
    root = files["README.md"].decode()
    assert f"]({name}/accuracy_vs_n.png)" in root and f"{name}/accuracy_vs_n.png" in files  # the image resolves
    assert "<local>/run" in card  # the run record keeps the dir's name only


def test_sharded_runs_push_to_their_own_configs_and_merge_back_from_the_hub(tmp_path, fake_policy, hub):
    for i in range(2):
        assert (
            main(
                [
                    *GEN,
                    "--output_dir",
                    str(tmp_path / f"s{i}"),
                    "--shard",
                    f"{i}/2",
                    "--push_to_hub",
                    "--hub_dataset_id",
                    "me/arith",
                    "--hub_revision",
                    "v1",
                ]
            )
            == 0
        )
    files = hub.repos["me/arith"]["v1"]
    assert parquet(files, "best_of_n--T-0.8--n-4--seed-0--shard-0-of-2/") and parquet(
        files, "best_of_n--T-0.8--n-4--seed-0--shard-1-of-2/"
    )
    out = tmp_path / "merged"
    assert (
        main(["merge", "--runs", "me/arith:best_of_n--T-0.8--n-4--seed-0--shard-*@v1", "--output_dir", str(out)]) == 0
    )
    assert (
        main(["merge", "--runs", str(tmp_path / "s0"), str(tmp_path / "s1"), "--output_dir", str(tmp_path / "local")])
        == 0
    )
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("prefill_tokens", "generated_tokens")} for r in rows]  # noqa: E731
    assert strip(read_rows(out)) == strip(read_rows(tmp_path / "local")) and len(read_rows(out)) == 6
    assert main(["merge", "--runs", "me/arith:no-such-*@v1", "--output_dir", str(tmp_path / "x")]) == 2


def test_eval_reads_parquet_only_runs_and_compares_shared_problems(tmp_path, fake_policy, caplog, capsys):
    assert main([*GEN, "--output_dir", str(tmp_path / "a")]) == 0
    assert main([*GEN, "--pool.num_problems", "4", "--output_dir", str(tmp_path / "b")]) == 0
    (tmp_path / "a" / "rows.jsonl").unlink()  # a dataset as downloaded from the Hub: parquet and card only
    with caplog.at_level("WARNING"):
        assert (
            main(["eval", "--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--output_dir", str(tmp_path / "e")]) == 0
        )
    assert "comparing them on the 4 they share" in caplog.text
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["problems"] == 4


def test_eval_of_a_hub_dataset(tmp_path, fake_policy, monkeypatch):
    from datasets import Dataset

    from synth.eval_runs import load_rows

    assert main([*GEN, "--output_dir", str(tmp_path / "a")]) == 0
    rows = Journal(tmp_path / "a" / "rows.jsonl").read()
    asked = []
    monkeypatch.setattr(
        "synth.hub.load_hub",
        lambda repo, config, split, error, what: asked.append((repo, config)) or Dataset.from_list(rows),
    )
    assert [r["id"] for r in load_rows("me/arith:best_of_n--T-0.8--n-4--seed-0")] == [r["id"] for r in rows]
    assert asked == [("me/arith", "best_of_n--T-0.8--n-4--seed-0")]


def test_train_prm_prefers_soft_labels():
    from synth.formats import hard_label_column, soft_label_column

    assert soft_label_column(["labels", "soft_labels"]) == "soft_labels" and soft_label_column(["labels"]) == "labels"
    assert (
        hard_label_column(["labels", "soft_labels"]) == "labels"
        and hard_label_column(["labels", "hard_labels"]) == "hard_labels"
    )


def test_card_yaml_is_what_the_hub_reads(tmp_path):
    write_dataset(sft_rows(3), tmp_path / "d", {"name": "tiny", "model": "smollm2-135m"}, kind="sft")
    meta = yaml.safe_load((tmp_path / "d" / "README.md").read_text().split("---")[1])
    assert meta["configs"][0]["data_files"][0]["path"].startswith("data/train-") and meta["size_categories"] == ["n<1K"]
    assert meta["license"] == "unknown"  # rows of an unknown source: no license is claimed
