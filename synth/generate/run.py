"""`synth generate`: pool -> search -> verify -> rows, written incrementally, then a dataset."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from synth.config import ConfigError, dump_yaml, from_dict, to_dict
from synth.evaluate import select_answers, summarize
from synth.filter.verify import verify_answers
from synth.generate.engine import Policy
from synth.generate.hf import DEFAULT_SYSTEM_PROMPT
from synth.generate.search import SearchConfig, SearchResult, run_search
from synth.generate.vllm import VLLMConfig, vllm_available
from synth.hub import write_dataset
from synth.journal import Journal
from synth.prm.scorer import PRM
from synth.problems import PoolConfig, load_pool, shard
from synth.records import Problem
from synth.train.sft import DTYPES

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    model: str = field(default="smollm2-135m", metadata={"help": "Policy: 'smollm2-135m' (bundled), a local checkpoint dir, or a Hub id."})
    system_prompt: str | None = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System prompt of the chat template (null for none)."})
    prm: str | None = field(default=None, metadata={"help": "Process reward model: 'default' (bundled), a PRM dir, or null. Needed by beam_search and dvts."})
    prm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": (
        "dtype the PRM scores in: auto = bfloat16 on GPUs and on CPUs with native bf16 (AMX / AVX512-BF16), else float32.")})
    engine: Literal["auto", "vllm", "transformers"] = field(default="auto", metadata={"help": (
        "Inference engine: vllm, transformers, or auto (vllm when it is installed, else transformers).")})
    dtype: str = field(default="float32", metadata={"help": "Policy weights dtype (float32, bfloat16, float16)."})
    batch_size: int = field(default=64, metadata={"help": "Max sequences per engine forward batch."})
    problems_per_batch: int = field(default=8, metadata={"help": "Problems searched together; the unit written to disk at once."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (results are reproducible for a given seed and batch layout)."})
    output_dir: str = field(default="runs/generate", metadata={"help": "Where rows.jsonl, the parquet dataset and its card go."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted run in output_dir, skipping finished problems."})
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing run in output_dir first."})
    push_to_hub: str | None = field(default=None, metadata={"help": (
        "Hub dataset repo (user/name) to push the dataset to when the run finishes (config '<strategy>-n<N>'); "
        "`synth push` gives full control (private, overwrite, config name).")})
    push_revision: str | None = field(default=None, metadata={"help": "Hub branch for push_to_hub (default main)."})
    shard: str | None = field(default=None, metadata={"help": "Run shard 'i/n' of the pool only (for job arrays)."})
    pool: PoolConfig = field(default_factory=PoolConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def __post_init__(self):
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.batch_size < 1 or self.problems_per_batch < 1:
            raise ValueError("batch_size and problems_per_batch must be >= 1")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.shard is not None:
            parse_shard(self.shard)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def resolve_engine(engine: str) -> str:
    """'auto' -> 'vllm' when vLLM is importable, else 'transformers'; 'vllm' without vLLM is an error."""
    if engine == "auto":
        return "vllm" if vllm_available() else "transformers"
    if engine == "vllm" and not vllm_available():
        raise ConfigError("engine: vllm is not installed here: `make install-vllm` (CPU, into .venv-vllm) "
                          "or `pip install vllm` (GPU); or use --engine transformers")
    return engine


def load_policy(cfg: GenerateConfig) -> Policy:
    """One engine per process: build it once and reuse it for every batch."""
    from synth.models import resolve_model

    engine = resolve_engine(cfg.engine)
    log.info("policy engine: %s", engine)
    if engine == "vllm":
        from synth.generate.vllm import VLLMPolicy

        return VLLMPolicy(resolve_model(cfg.model), system_prompt=cfg.system_prompt, dtype=cfg.dtype, seed=cfg.seed, options=cfg.vllm)
    from synth.generate.hf import TransformersPolicy

    return TransformersPolicy(resolve_model(cfg.model), system_prompt=cfg.system_prompt, batch_size=cfg.batch_size, dtype=cfg.dtype)


def batch_seed(seed: int, problems: list[Problem]) -> int:
    """A seed that depends on the batch's problems, so resumed runs sample what a fresh run would."""
    digest = hashlib.sha256(f"{seed}:{','.join(p.id for p in problems)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def problem_row(problem: Problem, result: SearchResult, cfg: GenerateConfig) -> dict[str, Any]:
    """One dataset row per problem, with every completion of it and the answer each selector picks."""
    traces = result.traces
    answers = [t.answer for t in traces]
    verified = [t.verified for t in traces]
    picks = select_answers(traces)
    return {
        "id": problem.id,
        "problem": problem.problem,
        "gold_answer": problem.answer,
        "source": problem.source,
        "difficulty": problem.difficulty,
        "completions": [t.completion for t in traces],
        "steps": [t.steps for t in traces],
        "answers": answers,
        "verified": verified,
        "num_tokens": [t.num_tokens for t in traces],
        "finished": [t.finished for t in traces],
        "step_scores": [t.step_scores for t in traces] if any(t.step_scores for t in traces) else None,
        "scores": [t.score for t in traces] if any(t.score is not None for t in traces) else None,
        **{f"{how}_answer": answers[i] if i is not None else None for how, i in picks.items()},
        **{f"{how}_verified": bool(verified[i]) if i is not None else False for how, i in picks.items()},
        "generated_tokens": result.cost.generated_tokens,
        "prefill_tokens": result.cost.prefill_tokens,
        "cached_tokens": result.cost.cached_tokens,
        "prm_steps": result.cost.prm_steps,
        "tree": json.dumps(result.tree) if result.tree is not None else None,
        "strategy": cfg.search.strategy,
        "n": cfg.search.n,
        "temperature": cfg.search.temperature,
        "seed": cfg.seed,
        "model": cfg.model,
        "metadata": json.dumps(problem.metadata, default=str),
    }


def prepare_output(cfg: GenerateConfig) -> Journal:
    """Refuse to mix runs: an existing run is resumed (same config) or overwritten, never clobbered."""
    out = Path(cfg.output_dir)
    journal = Journal(out / "rows.jsonl")
    saved = out / "config.yaml"
    if journal.path.exists() and not (cfg.resume or cfg.overwrite):
        raise ConfigError(
            f"{out} already holds a run ({len(journal.read())} problems done): "
            "pass --resume true to continue it or --overwrite true to start over"
        )
    if cfg.overwrite:
        shutil.rmtree(out, ignore_errors=True)
    if cfg.resume and saved.exists():
        if _comparable(cfg, saved) != _comparable(cfg, None):
            raise ConfigError(f"--resume: the config differs from the one {out} was started with ({saved}); "
                              "use the same recipe or a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(dump_yaml(cfg))
    return journal


def _comparable(cfg: GenerateConfig, saved: Path | None):
    """The parts of a config that must match for a resume (not the run-control flags)."""
    import yaml

    # a saved config goes through the dataclasses, so fields added since it was written take their defaults
    data = yaml.safe_load(dump_yaml(from_dict(GenerateConfig, yaml.safe_load(saved.read_text())) if saved else cfg))
    for key in ("resume", "overwrite", "batch_size", "output_dir", "vllm", "push_to_hub", "push_revision"):  # vllm: engine memory/parallel knobs
        data.pop(key, None)
    return data


def generate(cfg: GenerateConfig, policy: Policy | None = None, prm: PRM | None = None) -> dict[str, Any]:
    """Run the search over the pool; returns the summary metrics. Safe to interrupt and resume."""
    journal = prepare_output(cfg)
    problems = load_pool(cfg.pool)
    if cfg.shard:
        problems = shard(problems, *parse_shard(cfg.shard))
    rows = journal.read()
    done = {r["id"] for r in rows}
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info("resuming: %d problems done, %d to go", len(done), len(todo))
    policy = policy or load_policy(cfg)
    if prm is None and cfg.prm:
        from synth.prm.load import load_prm

        prm = load_prm(cfg.prm, dtype=cfg.prm_dtype)
    if cfg.search.strategy != "best_of_n" and prm is None:
        raise ConfigError(f"search.strategy {cfg.search.strategy} needs a PRM: set prm (e.g. --prm default)")
    trained_on = getattr(prm, "step_cut", None)
    if trained_on and trained_on != cfg.search.step_cut:
        log.warning("PRM %s was trained on %s steps but search.step_cut is %s: it scores steps unlike its training data "
                    "(--prm default scores delimiter steps, --prm default-sentence sentence steps)", cfg.prm, trained_on, cfg.search.step_cut)
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc=f"{cfg.search.strategy} N={cfg.search.n}", unit="problem")
    started, new_tokens = time.perf_counter(), 0
    try:
        for start in range(0, len(todo), cfg.problems_per_batch):
            batch = todo[start : start + cfg.problems_per_batch]
            results = run_search(policy, batch, cfg.search, batch_seed(cfg.seed, batch), prm)
            flat = [t for r in results for t in r.traces]
            for t, ok in zip(flat, verify_answers([t.answer for t in flat], [p for p, r in zip(batch, results) for _ in r.traces])):
                t.verified = ok
            new_rows = [problem_row(p, r, cfg) for p, r in zip(batch, results)]
            journal.append(new_rows)
            rows.extend(new_rows)
            new_tokens += sum(r.cost.generated_tokens for r in results)
            stats = summarize(rows)
            bar.update(len(batch))
            maj = f"maj@{stats['n']}"
            bar.set_postfix({"tok/s": f"{new_tokens / (time.perf_counter() - started):.0f}",
                             "pass@1": f"{stats['pass@1']:.2f}", maj: f"{stats[maj]:.2f}"})
    except KeyboardInterrupt:
        bar.close()
        log.warning("interrupted: %d of %d problems saved in %s; rerun with --resume true to continue",
                    len(rows), len(problems), journal.path)
        raise
    bar.close()
    elapsed = time.perf_counter() - started
    order = {p.id: i for i, p in enumerate(problems)}
    rows = sorted((r for r in rows if r["id"] in order), key=lambda r: order[r["id"]])
    summary = summarize(rows)
    summary["wall_s"] = round(elapsed, 1)
    summary["new_tokens_per_s"] = round(new_tokens / elapsed, 1) if elapsed > 0 else 0.0
    card = {"name": f"synth {cfg.search.strategy} on {cfg.model}", "model": cfg.model, "config": to_dict(cfg),
            "summary": summary, "load_path": str(Path(cfg.output_dir).resolve()), "synth_version": __import__("synth").__version__}
    write_dataset(rows, cfg.output_dir, card)
    _add_curves(rows, Path(cfg.output_dir), cfg.search.strategy)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _add_curves(rows: list[dict], out: Path, strategy: str) -> None:
    """Accuracy-vs-N table and plot next to the dataset, embedded in its card."""
    from synth.evaluate import accuracy_curves, curves_table, plot_curves

    curves = {strategy: accuracy_curves(rows)}
    plot_curves(curves, out / "accuracy_vs_n.png", title=f"{strategy}: accuracy vs N")
    with (out / "README.md").open("a") as f:
        f.write(f"\n## Accuracy vs N (subsampled)\n\n{curves_table(curves)}\n\n![accuracy vs N](accuracy_vs_n.png)\n")


def format_summary(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
    lines = [f"{k.ljust(width)}  {v:.3f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}" for k, v in summary.items()]
    return "\n".join(lines)


Config = GenerateConfig


def main(cfg: GenerateConfig) -> int:
    summary = generate(cfg)
    print(f"\nwrote {cfg.output_dir}\n" + format_summary(summary))
    if cfg.push_to_hub:
        from synth.hub import push_run

        push_run(cfg.output_dir, cfg.push_to_hub, f"{cfg.search.strategy}-n{cfg.search.n}", cfg.push_revision)
    return 0
