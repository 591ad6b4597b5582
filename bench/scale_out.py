"""Problems/min of a local run vs the Ray launcher with 1 and 2 workers, and what a killed worker costs.

    python bench/scale_out.py [--problems 64] [--n 8] [--out runs/bench-scale-out]

The quickstart recipe's pool scaled to --problems, best-of-N at --n, on the bundled SmolLM2; every run on
one torch thread per worker (the local run on one thread too). Prints one table:
  local             synth generate in this process
  ray, 1 worker     launcher: ray, one actor (Ray's overhead over the local run)
  ray, 2 workers    two actors, each on one core
  ray, 2 workers, one killed halfway   a watcher kills one worker process (kill -9) once half the problems
                    are saved; Ray restarts it and its batch runs again
and the ratios ray-1 / local, ray-2 / ray-1, and the seconds the killed worker cost. The rows of every Ray
run are checked to equal the local run's (same seed: same samples wherever a batch ran).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.config import from_dict, load_yaml  # noqa: E402
from synth.generate.run import GenerateConfig, generate  # noqa: E402
from synth.journal import Journal  # noqa: E402


def config(args, out: Path, launcher: str, workers: int) -> GenerateConfig:
    data = load_yaml("configs/quickstart.yaml")
    data.update(
        output_dir=str(out), overwrite=True, launcher=launcher, ray={"num_workers": workers, "cpus_per_worker": 1}
    )
    data["pool"] = {**data["pool"], "num_problems": args.problems}
    data["search"] = {**data["search"], "n": args.n}
    return from_dict(GenerateConfig, data)


def worker_pids() -> list[int]:
    """Processes of live synth worker actors (Ray titles them 'ray::Worker...')."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::Worker"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def kill_one_worker_halfway(journal: Journal, total: int, killed: list) -> None:
    """Wait until half the problems are saved, then kill -9 one worker actor's process."""
    while not journal.path.exists() or len(journal.read()) < total // 2:
        time.sleep(0.5)
    pids = worker_pids()
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        killed.append(time.perf_counter())


def run(args, name: str, launcher: str, workers: int, kill: bool = False) -> tuple[float, dict, list]:
    out = Path(args.out) / name.replace(" ", "-").replace(",", "")
    cfg = config(args, out, launcher, workers)
    killed: list = []
    if kill:
        threading.Thread(
            target=kill_one_worker_halfway, args=(Journal(out / "rows.jsonl"), args.problems, killed), daemon=True
        ).start()
    started = time.perf_counter()
    summary = generate(cfg)
    wall = time.perf_counter() - started
    rows = sorted(Journal(out / "rows.jsonl").read(), key=lambda r: r["id"])
    return wall, summary, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default="runs/bench-scale-out")
    args = ap.parse_args()

    import ray
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    results = {"local": run(args, "local", "local", 1)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, workers, kill in (
            ("ray, 1 worker", 1, False),
            ("ray, 2 workers", 2, False),
            ("ray, 2 workers, one killed halfway", 2, True),
        ):
            results[name] = run(args, name, "ray", workers, kill)
    finally:
        ray.shutdown()

    local_rows = results["local"][2]
    print(
        f"\n{args.problems} problems (quickstart pool), best-of-{args.n}, bundled SmolLM2, one torch thread per worker\n"
    )
    print("| run | wall s | problems/min | retried batches | rows equal the local run's |")
    print("|---|---|---|---|---|")
    for name, (wall, summary, rows) in results.items():
        if "killed" in name and not summary.get("retried_batches"):
            print(f"(no worker was killed in '{name}': it finished before half its problems were saved)")
        same = "-" if name == "local" else ("yes" if rows == local_rows else "NO")
        print(
            f"| {name} | {wall:.1f} | {60 * args.problems / wall:.1f} | {summary.get('retried_batches', 0)} | {same} |"
        )
    w = {name: r[0] for name, r in results.items()}
    print(f"\nray 1 worker / local: {w['local'] / w['ray, 1 worker']:.2f}x problems/min")
    print(f"ray 2 workers / ray 1 worker: {w['ray, 1 worker'] / w['ray, 2 workers']:.2f}x")
    print(
        f"a worker killed halfway cost {w['ray, 2 workers, one killed halfway'] - w['ray, 2 workers']:.1f} s "
        "(its actor restarted: the model loaded again, its batch searched again)"
    )


if __name__ == "__main__":
    main()
