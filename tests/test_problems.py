import json

import pandas as pd
import pytest

from synth.problems import PoolConfig, PoolError, load_pool, load_pool_with_report, shard


def test_reasoning_gym_pool_is_deterministic_and_seeded():
    cfg = PoolConfig(tasks=["basic_arithmetic"], num_problems=5, seed=3)
    a, b = load_pool(cfg), load_pool(cfg)
    assert [p.problem for p in a] == [p.problem for p in b]
    c = load_pool(PoolConfig(tasks=["basic_arithmetic"], num_problems=5, seed=4))
    assert [p.problem for p in a] != [p.problem for p in c]


def test_task_mix_weights_and_ids():
    pool = load_pool(PoolConfig(tasks=["basic_arithmetic", "chain_sum:3"], num_problems=8, seed=0))
    sources = [p.source for p in pool]
    assert sources.count("reasoning_gym/basic_arithmetic") == 2 and sources.count("reasoning_gym/chain_sum") == 6
    assert len({p.id for p in pool}) == 8
    assert sources[:2] == ["reasoning_gym/basic_arithmetic", "reasoning_gym/chain_sum"]  # interleaved


def test_metadata_survives_json_and_has_entry():
    p = load_pool(PoolConfig(tasks=["chain_sum"], num_problems=1))[0]
    meta = json.loads(json.dumps(p.metadata))
    assert meta["reasoning_gym"]["dataset"] == "chain_sum"
    assert meta["reasoning_gym"]["entry"]["answer"] == p.answer
    assert p.difficulty is not None


def test_task_config_per_task_and_errors():
    pool = load_pool(
        PoolConfig(
            tasks=["basic_arithmetic"],
            num_problems=4,
            task_config={"basic_arithmetic": {"min_digits": 1, "max_digits": 1, "min_terms": 2, "max_terms": 2}},
        )
    )
    assert all(len(p.problem) < 30 for p in pool)
    with pytest.raises(PoolError, match="did you mean basic_arithmetic"):
        load_pool(PoolConfig(tasks=["basic_arithmetc"]))
    with pytest.raises(PoolError, match="bad task_config"):
        load_pool(PoolConfig(tasks=["basic_arithmetic"], task_config={"no_such_knob": 1}))


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_local_files(tmp_path, suffix):
    rows = [{"question": "1+1?", "solution": 2, "uid": "a"}, {"question": "2+2?", "solution": 4, "uid": "b"}]
    path = tmp_path / f"pool{suffix}"
    df = pd.DataFrame(rows)
    {
        ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
        ".json": lambda: path.write_text(json.dumps(rows)),
        ".parquet": lambda: df.to_parquet(path),
        ".csv": lambda: df.to_csv(path, index=False),
    }[suffix]()
    pool = load_pool(
        PoolConfig(source="file", path=str(path), problem_column="question", answer_column="solution", id_column="uid")
    )
    assert [(p.id, p.problem, p.answer) for p in pool] == [("a", "1+1?", "2"), ("b", "2+2?", "4")]


def test_missing_column_and_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "q"}\n')
    with pytest.raises(PoolError, match=r"no column 'answer'.*\['problem'\]"):
        load_pool(PoolConfig(source="file", path=str(path)))
    with pytest.raises(PoolError, match="not found"):
        load_pool(PoolConfig(source="file", path=str(tmp_path / "nope.jsonl")))
    bad = tmp_path / "p.txt"
    bad.write_text("x")
    with pytest.raises(PoolError, match="unsupported file type"):
        load_pool(PoolConfig(source="file", path=str(bad)))


def test_rows_without_answer_are_reported(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": ""}\n{"problem": "", "answer": "3"}\n')
    pool, report = load_pool_with_report(PoolConfig(source="file", path=str(path)))
    assert len(pool) == 1 and report.skipped_ids == ["p-1", "p-2"]
    assert "skipped 2 rows" in caplog.text
    path.write_text('{"problem": "b", "answer": null}\n')
    with pytest.raises(PoolError, match="empty"):
        load_pool(PoolConfig(source="file", path=str(path)))


def test_hub_offline_is_a_clear_error(monkeypatch):
    from huggingface_hub import constants  # imported before the variable is set: it is read once, at import

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PoolError, match="(could not|cannot) load the pool 'nobody/no-such-dataset'"):
        load_pool(PoolConfig(source="hub", dataset="nobody/no-such-dataset"))


def test_hub_pool_without_network_fails_at_once(monkeypatch):
    """No network (the Hub's host does not resolve): one line at once, not half a minute of retries."""
    import socket
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)

    def no_dns(*a, **kw):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.perf_counter()
    with pytest.raises(
        PoolError, match="cannot load the pool 'some/dataset' from the Hugging Face Hub: offline.*local file"
    ):
        load_pool(PoolConfig(source="hub", dataset="some/dataset"))
    assert time.perf_counter() - started < 2


def test_id_column_is_used_when_present(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "q-7", "problem": "a", "answer": "1"}\n{"id": "q-9", "problem": "b", "answer": "2"}\n')
    assert [p.id for p in load_pool(PoolConfig(source="file", path=str(path)))] == ["q-7", "q-9"]


def test_shards_cover_the_pool_once():
    pool = load_pool(PoolConfig(tasks=["chain_sum"], num_problems=7))
    parts = [shard(pool, i, 3) for i in range(3)]
    assert sorted(p.id for part in parts for p in part) == sorted(p.id for p in pool)
    with pytest.raises(ValueError):
        shard(pool, 3, 3)
