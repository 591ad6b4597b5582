"""`engine: openai`: search over OpenAI-compatible servers, against a local test server (127.0.0.1) serving
the tiny model, with faults injected: the same rows with and without faults, a server that never recovers
ends the run cleanly (resumable), requests spread over servers, the API key never written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("openai")

from openai_server import FakeOpenAIServer  # noqa: E402

from synth.commands.cli import main  # noqa: E402
from synth.generate.openai_engine import EngineError, OpenAIConfig  # noqa: E402
from synth.generate.run import GenerateConfig, generate  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.problems import PoolConfig  # noqa: E402


class LengthPRM:
    """Scores a step by its length (deterministic, enough to rank tree-search candidates)."""

    def score(self, problems, steps):
        return [[min(len(s) / 50, 1.0) for s in path] for path in steps]


@pytest.fixture(scope="module")
def servers(tiny_model_dir):
    from synth.generate.hf import TransformersPolicy

    policy = TransformersPolicy(tiny_model_dir, batch_size=8)
    a, b = FakeOpenAIServer(policy, hang_s=3.0), FakeOpenAIServer(policy, hang_s=3.0)
    yield a, b
    a.stop()
    b.stop()


def config(out, model, urls, strategy="best_of_n", **openai):
    search = SearchConfig(
        strategy=strategy, n=4, beam_width=2, max_tokens=12, step_max_tokens=6, max_iterations=3, temperature=1.0
    )
    return GenerateConfig(
        model=model,
        output_dir=str(out),
        engine="openai",
        problems_per_batch=2,
        prm="length" if strategy != "best_of_n" else None,
        pool=PoolConfig(num_problems=4, seed=3),
        search=search,
        openai=OpenAIConfig(base_url=urls, timeout_s=1.5, max_retries=4, **openai),
    )


def rows(out):
    return [{k: v for k, v in r.items() if k != "cached_tokens"} for r in Journal(Path(out) / "rows.jsonl").read()]


@pytest.mark.parametrize("strategy", ["best_of_n", "beam_search", "dvts"])
def test_faults_change_no_row(tmp_path, tiny_model_dir, servers, strategy):
    a, _ = servers
    prm = None if strategy == "best_of_n" else LengthPRM()
    generate(config(tmp_path / "clean", tiny_model_dir, [a.url], strategy), prm=prm)
    a.faults = ["500", "429", "hang", "reset"]
    generate(config(tmp_path / "faulty", tiny_model_dir, [a.url], strategy), prm=prm)
    assert not a.faults  # every fault was met, and retried
    clean = rows(tmp_path / "clean")
    assert len(clean) == 4 and any(c for r in clean for c in r["completions"])
    assert rows(tmp_path / "faulty") == clean


def test_a_server_that_never_recovers_ends_the_run_cleanly(tmp_path, tiny_model_dir, servers):
    a, _ = servers
    cfg = dataclasses.replace(
        config(tmp_path / "run", tiny_model_dir, [a.url]),
        openai=OpenAIConfig(base_url=[a.url], timeout_s=1.5, max_retries=1),
    )
    done = []
    real = a.complete

    def down_after_first_batch(body):
        out = real(body)
        done.append(1)
        if len(done) == 8:  # the first batch: 2 problems x 4 samples
            a.down = True
        return out

    a.complete = down_after_first_batch
    try:
        with pytest.raises(EngineError, match=rf"{a.url}.*failed after 1 retries.*--resume true"):
            generate(cfg)
    finally:
        a.complete, a.down = real, False
    assert len(Journal(tmp_path / "run" / "rows.jsonl").read()) == 2  # the first batch is saved
    summary = generate(dataclasses.replace(cfg, resume=True))
    assert summary["problems"] == 4


def test_requests_spread_over_servers_and_the_key_stays_secret(tmp_path, tiny_model_dir, servers, monkeypatch, capsys):
    a, b = servers
    a.requests.clear(), b.requests.clear()
    monkeypatch.setenv("SYNTH_TEST_API_KEY", "sk-very-secret")
    out = tmp_path / "run"
    args = [
        "generate",
        "--model",
        tiny_model_dir,
        "--engine",
        "openai",
        "--openai.base_url",
        a.url,
        b.url,
        "--openai.api_key_env",
        "SYNTH_TEST_API_KEY",
        "--pool.num_problems",
        "4",
        "--search.n",
        "4",
        "--search.max_tokens",
        "8",
        "--output_dir",
        str(out),
    ]
    assert main(args) == 0
    assert a.requests and b.requests and len(a.requests) + len(b.requests) == 16
    assert "Bearer sk-very-secret" in a.auth | b.auth
    for f in out.rglob("*"):
        if f.is_file():
            assert b"sk-very-secret" not in f.read_bytes(), f
    assert "sk-very-secret" not in capsys.readouterr().err


def test_an_unreachable_server_is_one_line(tmp_path, tiny_model_dir, capsys):
    args = [
        "generate",
        "--model",
        tiny_model_dir,
        "--engine",
        "openai",
        "--openai.base_url",
        "http://127.0.0.1:9/v1",
        "--openai.max_retries",
        "0",
        "--pool.num_problems",
        "2",
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "did not answer GET /models" in err and not (tmp_path / "o").exists()


def test_overlap_samples_on_the_server_in_the_search_threads_and_scores_on_the_main_thread(
    tmp_path, tiny_model_dir, servers, monkeypatch
):
    """A served policy with a local PRM, two batches side by side: the server's calls go out from the searches'
    threads while the PRM scores on the main thread, and the rows are those of overlap 1."""
    import threading

    from synth.generate import openai_engine

    threads = {"policy": set(), "prm": set()}

    class LocalPRM(LengthPRM):
        device = "cpu"

        def score(self, problems, steps):
            threads["prm"].add(threading.get_ident())
            return super().score(problems, steps)

    real = openai_engine.OpenAIPolicy.generate

    def noted(self, prompts, params):
        threads["policy"].add(threading.get_ident())
        return real(self, prompts, params)

    monkeypatch.setattr(openai_engine.OpenAIPolicy, "generate", noted)
    a, _ = servers
    generate(config(tmp_path / "one", tiny_model_dir, [a.url], "dvts"), prm=LocalPRM())
    threads["policy"].clear()
    two = dataclasses.replace(config(tmp_path / "two", tiny_model_dir, [a.url], "dvts"), overlap=2)
    generate(two, prm=LocalPRM())
    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert threads["prm"] == {threading.main_thread().ident}
    assert len(threads["policy"]) == 2 and threading.main_thread().ident not in threads["policy"]
