"""Ray launcher on a local Ray cluster started by the tests (ray.init(num_cpus=2)): the same rows wherever a
batch ran, nothing lost when a worker or the driver dies, the actor options of GPU and vLLM workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'synth[ray]'")

from synth.generate.run import GenerateConfig, generate  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.launch import RayConfig, worker_options  # noqa: E402
from synth.problems import PoolConfig  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    die_dir = tmp_path_factory.mktemp("die")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": TESTS, "SYNTH_TEST_DIE_DIR": str(die_dir)}},
    )
    yield die_dir
    ray.shutdown()


def config(out, model, launcher="local", workers=1, **kw):
    return GenerateConfig(
        model=model,
        output_dir=str(out),
        problems_per_batch=2,
        launcher=launcher,
        batch_size=8,
        pool=PoolConfig(num_problems=6, seed=3),
        search=SearchConfig(n=2, max_tokens=8, temperature=1.0),
        ray=RayConfig(num_workers=workers, max_retries=2),
        **kw,
    )


def rows_of(out):
    return sorted(Journal(Path(out) / "rows.jsonl").read(), key=lambda r: r["id"])


def test_rows_do_not_depend_on_where_a_batch_ran(tmp_path, tiny_model_dir, cluster):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each one-CPU worker does
    try:
        generate(config(tmp_path / "local", tiny_model_dir))
    finally:
        torch.set_num_threads(threads)
    generate(config(tmp_path / "one", tiny_model_dir, "ray", 1))
    summary = generate(config(tmp_path / "two", tiny_model_dir, "ray", 2))
    local = rows_of(tmp_path / "local")
    assert len(local) == 6 and any(r["completions"][0] for r in local)
    assert rows_of(tmp_path / "one") == local and rows_of(tmp_path / "two") == local
    assert "retried_batches" not in summary  # none was


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path, tiny_model_dir, cluster):
    from fakes import dying_engines

    summary = generate(config(tmp_path / "run", tiny_model_dir, "ray", 2), worker_setup=dying_engines)
    assert (cluster / "died").exists()  # a worker did die, in the middle of its batch
    rows = Journal(tmp_path / "run" / "rows.jsonl").read()
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 6  # each problem once
    assert summary["retried_batches"] == 1 and summary["problems"] == 6


def test_a_killed_driver_resumes(tmp_path, tiny_model_dir, cluster):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "synth",
        "generate",
        "--model",
        tiny_model_dir,
        "--output_dir",
        str(out),
        "--pool.num_problems",
        "40",
        "--problems_per_batch",
        "1",
        "--search.n",
        "2",
        "--search.max_tokens",
        "48",
        "--launcher",
        "ray",
        "--ray.num_workers",
        "1",
    ]
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = Journal(out / "rows.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.path.exists() or len(journal.read()) < 2):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    done = len(journal.read())
    assert 2 <= done < 40
    cfg = dataclasses.replace(
        config(out, tiny_model_dir, "ray", 1),
        resume=True,
        pool=PoolConfig(num_problems=40),
        problems_per_batch=1,
        search=SearchConfig(n=2, max_tokens=48),
    )
    summary = generate(cfg)
    rows = journal.read()
    assert summary["problems"] == 40 and len({r["id"] for r in rows}) == 40 == len(rows)


def test_worker_options_for_gpus_and_vllm_tensor_parallelism():
    options, bundles = worker_options(RayConfig(num_workers=8, gpus_per_worker=1, cpus_per_worker=2, max_retries=3))
    assert options == {"num_cpus": 2, "num_gpus": 1, "max_restarts": 3, "max_task_retries": 3} and bundles is None
    options, bundles = worker_options(RayConfig(cpus_per_worker=1), tensor_parallel=4)
    assert options["num_gpus"] == 0  # the engine's workers take the GPUs, from the placement group
    assert bundles == [{"CPU": 1}] + [{"GPU": 1.0, "CPU": 1.0}] * 4


def test_shard_auto_reads_the_slurm_array(monkeypatch):
    from synth.problems import resolve_shard

    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(ValueError, match="inside a Slurm job array"):
        resolve_shard("auto")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert resolve_shard("auto") == "2/4" and GenerateConfig(shard="auto").shard == "2/4"
