import shutil
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset
from fakes import AnswerPolicy

from synth.commands.cli import main
from synth.eval_runs import load_rows
from synth.generate.run import GenerateConfig, generate
from synth.generate.search import SearchConfig
from synth.hub import read_rows, write_dataset
from synth.merge import MergeConfig, MergeError, merge
from synth.problems import PoolConfig, load_pool


def run_generate(out, shard=None, n=4):
    pool = PoolConfig(source="reasoning_gym", tasks=["basic_arithmetic"], num_problems=7, seed=3)
    cfg = GenerateConfig(output_dir=str(out), problems_per_batch=2, pool=pool, search=SearchConfig(n=n), shard=shard)
    generate(cfg, policy=AnswerPolicy({p.problem: p.answer for p in load_pool(pool)}, correct=(0, 2)))
    return str(out)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return {"full": run_generate(root / "full"), **{i: run_generate(root / f"s{i}", f"{i}/3") for i in range(3)}}


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in ("generated_tokens", "prefill_tokens")} for r in rows]


def test_merge_round_trip_equals_unsharded_run(shards, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", "--runs", f"{shards[2]},{shards[0]},{shards[1]}", "--output_dir", str(out)]) == 0
    assert "merged 3 generate shards" in capsys.readouterr().out
    merged, full = read_rows(out), read_rows(shards["full"])
    assert [r["id"] for r in merged] == [r["id"] for r in full]  # pool order restored
    assert _strip(merged) == _strip(full)
    # a fresh cache dir: datasets caches a local dir by its base name, so an older "merged" would be read back
    assert load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache")).to_list() == merged
    assert load_rows(out) == merged  # rows.jsonl: `synth eval` takes it like a generate run
    config = yaml.safe_load((out / "source_config.yaml").read_text())
    assert config["shard"] is None and config["search"]["n"] == 4
    assert "3 shards merged" in (out / "README.md").read_text()


def test_missing_and_duplicate_shards_are_named(shards, tmp_path):
    with pytest.raises(MergeError, match=r"missing shard\(s\) 1/3: .*have 0/3, 2/3"):
        merge(MergeConfig(runs=[shards[0], shards[2]], output_dir=str(tmp_path / "m")))
    with pytest.raises(MergeError, match=r"shard 0/3 is given twice: .*s0 and .*s0"):
        merge(MergeConfig(runs=[shards[0], shards[1], shards[0], shards[2]], output_dir=str(tmp_path / "m")))
    with pytest.raises(MergeError, match="not a sharded run"):
        merge(MergeConfig(runs=[shards["full"]], output_dir=str(tmp_path / "m")))
    assert not (tmp_path / "m").exists()


def test_config_mismatch_unfinished_shard_and_duplicate_ids(shards, tmp_path):
    other = run_generate(tmp_path / "other1", "1/3", n=2)
    with pytest.raises(MergeError, match=r"other1 \(shard 1/3\) was made with another config.*search.n differ"):
        merge(MergeConfig(runs=[shards[0], other, shards[2]], output_dir=str(tmp_path / "m")))

    unfinished = tmp_path / "unfinished"
    shutil.copytree(shards[1], unfinished)
    shutil.rmtree(unfinished / "data")
    with pytest.raises(MergeError, match=r"unfinished \(shard 1/3\) is not finished"):
        merge(MergeConfig(runs=[shards[0], str(unfinished), shards[2]], output_dir=str(tmp_path / "m")))

    dup = tmp_path / "dup"
    shutil.copytree(shards[1], dup)
    rows = read_rows(dup)
    rows[0]["id"] = read_rows(shards[0])[0]["id"]
    write_dataset(rows, dup, {"name": "dup"})
    with pytest.raises(MergeError, match=r"row 'basic_arithmetic-3-0' is in shard 0/3 .* and in shard 1/3"):
        merge(MergeConfig(runs=[shards[0], str(dup), shards[2]], output_dir=str(tmp_path / "m")))


def test_existing_output_needs_overwrite(shards, tmp_path, capsys):
    out = str(tmp_path / "merged")
    runs = ",".join(str(shards[i]) for i in range(3))
    assert main(["merge", "--runs", runs, "--output_dir", out]) == 0
    assert main(["merge", "--runs", runs, "--output_dir", out]) == 0  # the same merge again: a retry, rebuilt
    others = ",".join(str(shards[i]) for i in (2, 1, 0))
    assert main(["merge", "--runs", others, "--output_dir", out]) == 2
    assert "--overwrite true" in capsys.readouterr().err
    assert main(["merge", "--runs", others, "--output_dir", out, "--overwrite", "true"]) == 0
    assert main(["merge", "--runs", str(tmp_path / "nope"), "--output_dir", out]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_push_to_hub_on_producing_commands(shards, tmp_path, monkeypatch, capsys):
    """`--push_to_hub` on generate and merge: the dataset is written locally, then pushed (config per strategy)."""
    import synth.commands.generate as generate_command
    import synth.generate.run as run
    from synth.hub import PushError

    pushes = []

    def fake_push(local, repo_id, config_name=None, revision=None, **kw):
        assert (Path(local) / "README.md").exists() and list((Path(local) / "data").glob("*.parquet"))
        pushes.append((repo_id, config_name, revision))
        return f"https://huggingface.co/datasets/{repo_id}"

    monkeypatch.setattr("synth.hub.push_dataset", fake_push)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert (
        main(
            [
                "merge",
                "--runs",
                ",".join(shards[i] for i in range(3)),
                "--output_dir",
                str(tmp_path / "m"),
                "--push_to_hub",
                "--hub_dataset_id",
                "me/arith",
            ]
        )
        == 0
    )
    pool = PoolConfig(source="reasoning_gym", tasks=["basic_arithmetic"], num_problems=3, seed=3)
    monkeypatch.setattr(run, "load_policy", lambda cfg: AnswerPolicy({p.problem: p.answer for p in load_pool(pool)}))
    cfg = GenerateConfig(
        output_dir=str(tmp_path / "g"),
        pool=pool,
        search=SearchConfig(n=2),
        push_to_hub=True,
        hub_dataset_id="me/arith",
        hub_revision="v1",
    )
    assert generate_command.main(cfg) == 0
    assert pushes == [
        ("me/arith", "best_of_n--T-0.8--n-4--seed-0", None),
        ("me/arith", "best_of_n--T-0.8--n-2--seed-0", "v1"),
    ]
    assert "pushed" in capsys.readouterr().out
    # the old spelling still works, with a deprecation warning
    old = main(
        [
            "generate",
            "--output_dir",
            str(tmp_path / "g3"),
            "--pool.num_problems",
            "3",
            "--pool.seed",
            "3",
            "--search.n",
            "2",
            "--push_to_hub",
            "me/arith",
            "--push_revision",
            "v2",
        ]
    )
    assert old == 0 and pushes[-1] == ("me/arith", "best_of_n--T-0.8--n-2--seed-0", "v2")

    def offline(*a, **kw):
        raise PushError("cannot reach the Hub; the local copy is intact")

    monkeypatch.setattr("synth.hub.push_dataset", offline)
    with pytest.raises(PushError, match="intact"):
        generate_command.main(
            GenerateConfig(
                output_dir=str(tmp_path / "g2"),
                pool=pool,
                search=SearchConfig(n=2),
                push_to_hub=True,
                hub_dataset_id="me/arith",
            )
        )
    assert len(read_rows(tmp_path / "g2")) == 3  # written before the push was tried
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token.*nothing was run"):  # checked before any work
        generate_command.main(
            GenerateConfig(
                output_dir=str(tmp_path / "g4"),
                pool=pool,
                search=SearchConfig(n=2),
                push_to_hub=True,
                hub_dataset_id="me/arith",
            )
        )
    assert not (tmp_path / "g4").exists()
