"""Shared by the benches: the held-out pool, their tree search, greedy correctness on a pool, paired gains,
search runs' layout."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.filter.select import normalize  # noqa: E402
from synth.generate.run import GenerateConfig, generate  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.problems import PoolConfig  # noqa: E402


def held_out_pool(seed: int, problems: int) -> PoolConfig:
    """The benches' held-out arithmetic pool (1-2 digit, two terms): the default PRM trained on seed 100."""
    return PoolConfig(
        tasks=["basic_arithmetic", "chain_sum"],
        num_problems=problems,
        seed=seed,
        task_config={
            "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
            "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
        },
    )


def bench_pool(tasks: list[str] | None, seed: int, problems: int) -> PoolConfig:
    """`problems` of reasoning-gym `tasks` at `seed`, or without tasks the held-out arithmetic pool."""
    return PoolConfig(tasks=tasks, num_problems=problems, seed=seed) if tasks else held_out_pool(seed, problems)


def tree_search(strategy: str, n: int = 16, **overrides) -> SearchConfig:
    """The benches' tree search: M=2, sentence steps, 8 iterations of at most 64 tokens, 160 in all."""
    fields = dict(beam_width=2, step_cut="sentence", max_iterations=8, step_max_tokens=64, max_tokens=160)
    return SearchConfig(strategy=strategy, n=n, **{**fields, **overrides})


def greedy_correct(
    model: str, pool: PoolConfig, out: Path, keep: set[str], max_tokens: int, batch_size: int, seed: int
) -> dict[str, bool]:
    """Greedy answer verified, per problem id in `keep` (a resumable `synth generate` run in `out`)."""
    greedy = SearchConfig(strategy="best_of_n", n=1, temperature=0.0, max_tokens=max_tokens)
    generate(
        GenerateConfig(
            model=model,
            pool=pool,
            search=greedy,
            output_dir=str(out),
            resume=True,
            problems_per_batch=64,
            batch_size=batch_size,
            seed=seed,
        )
    )
    return {r["id"]: bool(r["verified"][0]) for r in Journal(out / "rows.jsonl").read() if r["id"] in keep}


def paired_gain(new: dict, old: dict, ids: list) -> tuple[float, float]:
    """Mean gain of `new` over `old` on `ids` and its standard error (paired over problems), in points."""
    diffs = [int(new[i]) - int(old[i]) for i in ids]
    return statistics.fmean(diffs) * 100, statistics.stdev(diffs) / math.sqrt(len(diffs)) * 100


def search_run_dir(out: str | Path, seed: int, strategy: str, n: int) -> Path:
    """Where bench/search_compare.py writes one strategy's run at one N and held-out seed."""
    return Path(out) / f"seed{seed}" / f"{strategy}-n{n}"


def first_ids(rows: list[dict]) -> dict[str, str]:
    """Normalised problem text -> the id of its first row (small pools repeat problems across seeds:
    each distinct problem counts once)."""
    first: dict[str, str] = {}
    for r in rows:
        first.setdefault(normalize(r["problem"]), r["id"])
    return first
