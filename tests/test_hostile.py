"""Hostile input: what a careless or unlucky user does to synth, and what synth must do instead.

Attacks (each a test below; a sentinel file must survive every data-loss case):
 1. `--overwrite true` on a directory synth did not make (and a pool that does not exist): refused, untouched.
 2. generate / label / filter / merge / train / train-prm / rounds / eval into a directory synth did not
    make (a README.md and data/keep.csv): refused in one line, nothing overwritten or deleted.
 3. A --overwrite of a synth run dir that also holds a user's file: refused, nothing deleted (also
    bench/rounds.py --fresh).
 4. File pools read as text: "007", 98765432109876543210, true, ids "01"/"02" (JSONL and CSV) stay as written.
 5. A parquet pool with a list-valued problem or a struct answer: a clear error, not a stringified list.
 6. Verification: "1, 2" is not 12; a gold "\\$18.90" matches 18.9; 4 pathological pairs cost no more
    than about one timeout and never the good pair queued behind them.
 7. A plain model directory as --prm (random head) and a --prm directory without config.json: refused.
 8. Resume after the pool file changed (a problem inserted): refused, naming the first changed id.
 9. `synth label --resume true --rollouts 3` on a K=2 run: refused, naming rollouts; config kept.
10. Two processes on one output dir: the second refuses (the lock), the first's rows intact.
11. Values that make no sense: n 2.7, temperature inf, top_p 0 / 5 / -1, pool.limit -1.
12. One line instead of a traceback: --config naming a directory, --pool.task_config '{bad', a corrupt line
    in the middle of rows.jsonl, a disk that fills up (ENOSPC; --resume then finishes).
13. A 5 MB problem: skipped and reported before any generation, the other problems generated.
14. A UTF-8 BOM, an integer above 2**64, and a line that is not JSON (its number named) in a JSONL pool.
15. kill -9 of a run: its math-verify workers exit with it.
16. A transformers that ignores the KV cache passed as `cache=`: a loud error, not garbage text.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from fakes import AnswerPolicy

from synth.commands.cli import main
from synth.config import ConfigError, from_dict
from synth.generate.run import GenerateConfig, generate
from synth.generate.search import SearchConfig
from synth.hub import write_dataset
from synth.journal import Journal
from synth.problems import PoolConfig, PoolError, load_pool
from synth.rundir import RunDirError


def victim(tmp_path):
    """A user's directory: a file synth must never touch, a README and a data folder."""
    d = tmp_path / "victim"
    (d / "data").mkdir(parents=True)
    (d / "important.txt").write_text("precious")
    (d / "README.md").write_text("my notes")
    (d / "data" / "keep.csv").write_text("a,b\n1,2\n")
    return d


def intact(d) -> bool:
    return (
        (d / "important.txt").read_text() == "precious"
        and (d / "README.md").read_text() == "my notes"
        and (d / "data" / "keep.csv").exists()
        and sorted(p.name for p in d.iterdir()) == ["README.md", "data", "important.txt"]
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("synth ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def fake_policy(monkeypatch):
    """`synth generate` on the command line with a fake policy that answers every problem of its pool."""

    def load(cfg):
        return AnswerPolicy({p.problem: p.answer for p in load_pool(cfg.pool)}, correct=(0,))

    monkeypatch.setattr("synth.generate.run.load_policy", load)


GEN = ["generate", "--pool.num_problems", "4", "--pool.seed", "3", "--search.n", "2", "--problems_per_batch", "2"]


# ---------------------------------------------------------------- data lost


def test_overwrite_of_a_foreign_dir_deletes_nothing(tmp_path, capsys, fake_policy):
    d = victim(tmp_path)
    code = main(
        [
            "generate",
            "--pool.source",
            "file",
            "--pool.path",
            "/nonexistent.jsonl",
            "--overwrite",
            "--output_dir",
            str(d),
        ]
    )
    assert code == 2 and "was not made by synth" in one_line_error(capsys) and intact(d)
    assert main([*GEN, "--overwrite", "--output_dir", str(d)]) == 2 and intact(d)


def _foreign_runs(tmp_path, gen_run):
    return {
        "generate": GEN,
        "label": ["label", "--dataset", gen_run],
        "filter": ["filter", "--dataset", gen_run],
        "merge": ["merge", "--runs", gen_run],
        "train": ["train", "--dataset", str(tmp_path / "sft.jsonl")],
        "train-prm": ["train-prm", "--dataset", str(tmp_path / "steps.jsonl")],
        "rounds": ["rounds", "--eval_pool.seed", "5"],
        "eval": ["eval", "--runs", gen_run],
    }


@pytest.mark.parametrize("command", ["generate", "label", "filter", "merge", "train", "train-prm", "rounds", "eval"])
def test_every_command_refuses_a_directory_it_did_not_make(tmp_path, capsys, fake_policy, command):
    gen_run = str(tmp_path / "gen")
    assert main([*GEN, "--output_dir", gen_run, "--shard", "0/1"]) == 0
    (tmp_path / "sft.jsonl").write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    (tmp_path / "steps.jsonl").write_text(json.dumps({"prompt": "q", "completions": ["a"], "labels": [1.0]}) + "\n")
    capsys.readouterr()
    d = victim(tmp_path)
    assert main([*_foreign_runs(tmp_path, gen_run)[command], "--output_dir", str(d)]) == 2
    assert "was not made by synth" in one_line_error(capsys)
    assert intact(d)


def test_overwrite_of_a_synth_dir_holding_a_users_file_deletes_nothing(tmp_path, capsys, fake_policy):
    out = tmp_path / "run"
    assert main([*GEN, "--output_dir", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    assert main([*GEN, "--output_dir", str(out), "--overwrite"]) == 2
    assert "holds notes.txt, which synth did not write" in one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == before and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main([*GEN, "--output_dir", str(out), "--overwrite"]) == 0  # a clean synth dir is cleared and rebuilt
    assert len(Journal(out / "rows.jsonl").read()) == 4


def test_bench_rounds_fresh_clears_only_a_rounds_dir_synth_made(tmp_path, monkeypatch):
    import importlib.util

    from synth.train.rounds import RoundsConfig, run_dir

    spec = importlib.util.spec_from_file_location(
        "bench_rounds", os.path.join(os.path.dirname(__file__), "..", "bench", "rounds.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    d = victim(tmp_path)
    with pytest.raises(RunDirError, match="was not made by synth"):
        bench.clear(RoundsConfig(output_dir=str(d), train_pool=PoolConfig(seed=200)))
    assert intact(d)
    out = tmp_path / "rounds"
    cfg = RoundsConfig(output_dir=str(out), train_pool=PoolConfig(seed=200))
    with run_dir(cfg).check().claim():
        (out / "round-1").mkdir()
        (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds notes.txt"):
        bench.clear(cfg)
    assert (out / "round-1").is_dir() and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    bench.clear(cfg)
    assert not (out / "round-1").exists() and (out / ".synth-run.json").exists()


def test_a_run_dir_of_another_command_is_refused(tmp_path, capsys, fake_policy):
    out = tmp_path / "run"
    assert main([*GEN, "--output_dir", str(out)]) == 0
    assert main(["eval", "--runs", str(out), "--output_dir", str(out)]) == 2
    assert "holds a `synth generate` run, not a `synth eval` one" in one_line_error(capsys)


# ---------------------------------------------------------------- silent wrong results


def test_file_pools_keep_text_exactly_as_written(tmp_path):
    rows = [
        {"id": "01", "problem": "a", "answer": "007"},
        {"id": "02", "problem": "b", "answer": 98765432109876543210},
        {"id": "03", "problem": "c", "answer": True},
        {"id": "04", "problem": "d", "answer": 1.50},
    ]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows).replace('"answer": 1.5}', '"answer": 1.50}'))
    got = [(p.id, p.answer) for p in load_pool(PoolConfig(source="file", path=str(jsonl)))]
    assert got == [("01", "007"), ("02", "98765432109876543210"), ("03", "true"), ("04", "1.50")]
    csv = tmp_path / "p.csv"
    csv.write_text("id,problem,answer\n01,a,007\n02,b,98765432109876543210\n")
    assert [(p.id, p.answer) for p in load_pool(PoolConfig(source="file", path=str(csv)))] == [
        ("01", "007"),
        ("02", "98765432109876543210"),
    ]
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"data": rows[:2]}))
    assert [p.answer for p in load_pool(PoolConfig(source="file", path=str(js)))] == ["007", "98765432109876543210"]


@pytest.mark.parametrize("column, value", [("problem", ["What is 1+1?"]), ("answer", {"value": 2})])
def test_parquet_pool_with_lists_or_structs_is_an_error(tmp_path, column, value):
    row = {"problem": "What is 1+1?", "answer": "2", column: value}
    path = tmp_path / "p.parquet"
    pd.DataFrame([row]).to_parquet(path)
    with pytest.raises(PoolError, match=f"column '{column}' holds a .*not text"):
        load_pool(PoolConfig(source="file", path=str(path)))


def test_verification_is_exact_and_timeouts_cost_one_pair():
    from synth.verify import math_equal, verify_many

    assert not math_equal("1, 2", "12") and not math_equal("1,2", "12") and math_equal("1,234", "1234")
    assert math_equal("18.9", "\\$18.90") and math_equal("\\$18.90", "18.90") and math_equal("$18.90", "18.9")
    bad = [("9^{9^{9^{9}}}", "1"), ("10^{10^{10}}", "2"), ("(10^{100})!", "3"), ("9^{9^{9^{8}}}", "4")]
    started = time.perf_counter()
    assert verify_many(bad + [("\\sqrt{4}", "2")], timeout=3.0) == [False] * 4 + [True]
    assert time.perf_counter() - started < 2 * 3.0 + 4  # about one timeout (plus starting workers), not one per pair


def test_a_plain_model_dir_is_no_prm(tmp_path, tiny_model_dir, capsys):
    from synth.prm.load import PRMError, load_prm

    with pytest.raises(PRMError, match="holds no PRM head"):
        load_prm(tiny_model_dir)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(PRMError, match="no config.json"):
        load_prm(str(empty))
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"prompt": "q", "completions": ["a"], "labels": [1.0]}) + "\n")
    assert main(["eval-prm", "--prm", tiny_model_dir, "--dataset", str(steps)]) == 2
    assert "holds no PRM head" in one_line_error(capsys)


def test_resume_after_the_pool_changed_is_refused(tmp_path, capsys, fake_policy):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    )
    args = [
        "generate",
        "--pool.source",
        "file",
        "--pool.path",
        str(pool),
        "--search.n",
        "2",
        "--output_dir",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    lines = pool.read_text().splitlines()
    pool.write_text(
        "\n".join(lines[:2] + [json.dumps({"problem": "What is 10 + 1?", "answer": "11"})] + lines[2:]) + "\n"
    )
    before = (tmp_path / "run" / "rows.jsonl").read_text()
    assert main([*args, "--resume"]) == 2
    assert "problem 'pool-2' changed since the run started" in one_line_error(capsys)
    assert (tmp_path / "run" / "rows.jsonl").read_text() == before


def test_label_resume_with_other_rollouts_is_refused(tmp_path, capsys):
    from test_label import RolloutPolicy, run_dir

    from synth.prm.label import LabelConfig, label

    data = run_dir(tmp_path, {"What is 3+4?": [(["ok1", "The answer is 7"], True)]})
    cfg = LabelConfig(dataset=str(data), rollouts=2, output_dir=str(tmp_path / "labels"))
    label(cfg, policy=RolloutPolicy({"What is 3+4?": "7"}))
    saved = (tmp_path / "labels" / "config.yaml").read_text()
    with pytest.raises(RunDirError, match=r"made with another config: rollouts \(2 -> 3\)"):
        label(
            LabelConfig(dataset=str(data), rollouts=3, output_dir=str(tmp_path / "labels"), resume=True),
            policy=RolloutPolicy({"What is 3+4?": "7"}),
        )
    assert (tmp_path / "labels" / "config.yaml").read_text() == saved


def test_a_second_process_on_the_same_dir_refuses(tmp_path, fake_policy):
    from synth.generate.run import run_dir

    cfg = GenerateConfig(
        output_dir=str(tmp_path / "run"), pool=PoolConfig(num_problems=2, seed=3), search=SearchConfig(n=2)
    )
    with run_dir(cfg).check().claim():  # another process holding the dir (flock is per open file)
        with pytest.raises(RunDirError, match="in use by another synth process"):
            generate(dataclasses.replace(cfg, resume=True))
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from synth.generate.run import GenerateConfig, run_dir
        from synth.generate.search import SearchConfig
        from synth.problems import PoolConfig
        cfg = GenerateConfig(output_dir={str(tmp_path / "other")!r}, pool=PoolConfig(num_problems=2), search=SearchConfig(n=2))
        with run_dir(cfg).check().claim():
            print("locked", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        other = GenerateConfig(
            output_dir=str(tmp_path / "other"), pool=PoolConfig(num_problems=2), search=SearchConfig(n=2), resume=True
        )
        with pytest.raises(RunDirError, match=r"in use by another synth process \(pid \d+\)"):
            generate(other)
    finally:
        holder.kill()
        holder.wait()
    assert generate(other)["problems"] == 2  # the lock died with its process


@pytest.mark.parametrize(
    "data, message",
    [
        ({"search": {"n": 2.7}}, "search.n must be a whole number, got 2.7"),
        ({"search": {"temperature": float("inf")}}, "search.temperature must be a finite number"),
        ({"search": {"top_p": 0}}, r"search.top_p must be in \(0, 1\], got 0"),
        ({"search": {"top_p": 5}}, r"search.top_p must be in \(0, 1\], got 5"),
        ({"pool": {"limit": -1}}, "pool.limit must be >= 1, got -1"),
        ({"search": {"n": -3}}, "^search.n must be >= 1, got -3$"),
    ],
)
def test_values_that_make_no_sense(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(GenerateConfig, data)


# ---------------------------------------------------------------- one line, not a traceback


@pytest.mark.parametrize(
    "args, message",
    [
        (["--search.top_p", "-1"], r"search.top_p must be in \(0, 1\]"),
        (["--config", "configs"], "not a file"),
        (["--pool.task_config", "{bad"], "--pool.task_config: not valid YAML"),
        (["--prm", "."], "holds no PRM head|no config.json"),
        (["--search.nn", "4"], r"unknown option '--search.nn' \(did you mean '--search.n'\?\)"),
        (["--search.n", "-3"], "search.n must be >= 1, got -3"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, fake_policy, args, message):
    assert main([*GEN, "--output_dir", str(tmp_path / "o"), *args]) == 2
    assert __import__("re").search(message, one_line_error(capsys))


def test_a_corrupt_journal_line_is_one_line(tmp_path, capsys, fake_policy):
    out = tmp_path / "run"
    assert main([*GEN, "--output_dir", str(out)]) == 0
    lines = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    assert main([*GEN, "--output_dir", str(out), "--resume"]) == 2
    assert "rows.jsonl:2: corrupt line in the middle of the journal" in one_line_error(capsys)


def test_a_full_disk_stops_in_one_line_and_resume_finishes(tmp_path, capsys, fake_policy, monkeypatch):
    out = tmp_path / "run"
    real_append, calls = Journal.append, []

    def append_then_fill_up(self, rows):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, rows)

    monkeypatch.setattr(Journal, "append", append_then_fill_up)
    assert main([*GEN, "--output_dir", str(out)]) == 1
    assert "no space left on the device" in one_line_error(capsys) and len(Journal(out / "rows.jsonl").read()) == 2
    monkeypatch.setattr(Journal, "append", real_append)
    assert main([*GEN, "--output_dir", str(out), "--resume"]) == 0
    assert len(Journal(out / "rows.jsonl").read()) == 4


def test_a_huge_problem_is_skipped_and_reported(tmp_path, tiny_policy, caplog):
    pool = tmp_path / "pool.jsonl"
    rows = [
        {"id": "small", "problem": "What is 1 + 1?", "answer": "2"},
        {"id": "huge", "problem": "1 + 1 = ? " * 500_000, "answer": "2"},
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(
        output_dir=str(tmp_path / "run"),
        pool=PoolConfig(source="file", path=str(pool)),
        search=SearchConfig(n=2, max_tokens=4),
    )
    with caplog.at_level("WARNING"):
        summary = generate(cfg, policy=tiny_policy)
    assert summary["problems"] == 1 and summary["skipped_too_long"] == 1
    assert "skipped 1 problems too long for the model" in caplog.text and "huge" in caplog.text
    assert [r["id"] for r in Journal(tmp_path / "run" / "rows.jsonl").read()] == ["small"]


def test_jsonl_pools_with_a_bom_big_integers_and_a_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        "\ufeff".encode() + b'{"problem": "a", "answer": 1, "n": 18446744073709551617}\n{"problem": "b", "answer": 2}\n'
    )
    pool = load_pool(PoolConfig(source="file", path=str(path)))
    assert [p.answer for p in pool] == ["1", "2"] and pool[0].metadata["n"] == 2**64 + 1
    path.write_text('{"problem": "a", "answer": 1}\n{"problem": "b", answer: 2}\n')
    with pytest.raises(PoolError, match=r"p.jsonl:2: not valid JSON"):
        load_pool(PoolConfig(source="file", path=str(path)))


# ---------------------------------------------------------------- leaks and pins


def test_verify_workers_exit_with_a_killed_parent(tmp_path):
    script = textwrap.dedent("""
        from synth.verify import _pool, math_equal
        if __name__ == "__main__":
            math_equal("x^2", "x \\\\cdot x")  # no plain numbers: a pair for the worker pool
            print(" ".join(str(p) for p in _pool()._processes), flush=True)
            import time; time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_kv_cache_that_stays_empty_is_a_loud_error(tiny_model_dir, monkeypatch):
    from synth.generate.engine import SamplingParams
    from synth.generate.hf import TransformersPolicy

    policy = TransformersPolicy(tiny_model_dir, batch_size=4)
    forward = policy.model.forward

    def ignores_cache(*args, cache=None, **kw):  # what transformers < 5.20 did with `cache=`
        return forward(*args, **kw)

    monkeypatch.setattr(policy.model, "forward", ignores_cache)
    with pytest.raises(RuntimeError, match="did not fill the KV cache.*transformers>=5.20"):
        policy.generate(["What is 1 + 1?"], SamplingParams(n=1, max_tokens=2))


def test_generate_rows_are_written_only_after_validation(tmp_path, capsys, fake_policy):
    """A bad PRM is found before the output dir exists (nothing half-made to clean up)."""
    out = tmp_path / "run"
    assert main([*GEN, "--output_dir", str(out), "--prm", str(tmp_path / "missing-prm")]) == 2
    assert "not found" in one_line_error(capsys) and not out.exists()
    write_dataset([{"a": 1}], tmp_path / "ds", {"name": "x"})  # a dataset dir is no PRM either
    assert main([*GEN, "--output_dir", str(out), "--prm", str(tmp_path / "ds")]) == 2
    assert not out.exists()
