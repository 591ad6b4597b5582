"""The generate run: pool -> search -> verify -> rows, written incrementally, then a dataset.

Everything is validated (config, output dir, pool, PRM, push target, policy, prompt lengths) before
the output dir is touched; the run then holds the dir's lock, appends each batch of rows to its
journal, and resumes from it: finished problems are skipped, provided they are still the same problems.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from synth.config import ConfigError, check_fields, to_dict
from synth.evaluate import SELECTORS, curves_section, select_answers, summarize
from synth.generate.engine import DEFAULT_SYSTEM_PROMPT, ChatPrompts, Policy
from synth.generate.openai_engine import OpenAIConfig
from synth.generate.overlap import SharedEngines, shared_engines
from synth.generate.search import SearchConfig, SearchResult, require_prm, run_search
from synth.generate.vllm import VLLMConfig, vllm_available
from synth.hub import PUSH_KEYS, PushConfig, check_push, config_name, write_dataset
from synth.journal import Journal
from synth.launch import Launcher, RayConfig, run_batches
from synth.models import AUTO_DTYPE_HELP, AutoDtype
from synth.prm.scorer import PRM
from synth.problems import PoolConfig, load_pool_with_report, parse_shard, resolve_shard, shard
from synth.records import Problem, fingerprint
from synth.rundir import RunDir
from synth.verify import verify_answers

log = logging.getLogger(__name__)

# What a generate run writes into its output dir (everything else there makes --overwrite refuse).
OUTPUTS = ("rows.jsonl", "data", "data.tmp", "README.md", "summary.json", "accuracy_vs_n.png")
# Keys that may change between a run and its continuation.
RUN_CONTROL = ("batch_size", "overlap", "vllm", "openai", "launcher", "ray", *PUSH_KEYS)


class PoolChanged(ConfigError):
    """A resumed run whose pool no longer holds the problems its finished rows were made for."""


@dataclass
class GenerateConfig(PushConfig):
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Policy: 'smollm2-135m' (bundled), a local checkpoint dir, or a Hub id."},
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System prompt of the chat template (null for none)."}
    )
    prm: str | None = field(
        default=None,
        metadata={
            "help": "Process reward model: 'default' (bundled), a PRM dir, or null. Needed by beam_search and dvts."
        },
    )
    prm_dtype: AutoDtype = field(default="auto", metadata={"help": f"dtype the PRM scores in: {AUTO_DTYPE_HELP}."})
    prm_engine: Literal["transformers", "vllm"] = field(
        default="transformers",
        metadata={
            "help": (
                "What scores a synth PRM: transformers, or vllm (its pooling runner; falls back to transformers where it "
                "cannot). A PRM behind `vllm serve --runner pooling` is --prm http://host:port."
            )
        },
    )
    engine: Literal["auto", "vllm", "transformers", "openai"] = field(
        default="auto",
        metadata={
            "help": (
                "Inference engine: vllm, transformers, openai (OpenAI-compatible servers, the openai: section), or auto (vllm when it is installed, else transformers)."
            )
        },
    )
    dtype: AutoDtype = field(default="auto", metadata={"help": f"Policy weights dtype: {AUTO_DTYPE_HELP}."})
    batch_size: int = field(
        default=64, metadata={"range": "[1, inf)", "help": "Max sequences per engine forward batch."}
    )
    problems_per_batch: int = field(
        default=8,
        metadata={"range": "[1, inf)", "help": "Problems searched together; the unit written to disk at once."},
    )
    seed: int = field(
        default=0, metadata={"help": "Sampling seed (results are reproducible for a given seed and batch layout)."}
    )
    output_dir: str = field(
        default="runs/generate", metadata={"help": "Where rows.jsonl, the parquet dataset and its card go."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue an interrupted run in output_dir, skipping finished problems."}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Start over: clear the synth run in output_dir first (never a directory synth did not make)."
        },
    )
    shard: str | None = field(
        default=None,
        metadata={"help": "Run shard 'i/n' of the pool only (for job arrays); 'auto': this Slurm array task's."},
    )
    launcher: Launcher = field(
        default="local",
        metadata={
            "help": (
                "Where batches are searched: local (this process), or ray (a pool of Ray actors, the ray: section)."
            )
        },
    )
    overlap: int = field(
        default=1,
        metadata={
            "range": "[1, 8]",
            "help": (
                "Problem batches searched side by side in this process (tree search): while one batch's search waits for "
                "a served policy (vLLM or OpenAI-compatible server), another's steps are scored by the PRM. Local engines run "
                "their calls in turns on the main thread; the rows are those of overlap 1. Local launcher."
            ),
        },
    )
    pool: PoolConfig = field(default_factory=PoolConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        super().__post_init__()
        check_fields(self)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.overlap > 1 and self.launcher != "local":
            raise ValueError("overlap runs batches side by side in one process: use it with launcher local")
        self.shard = resolve_shard(self.shard)

    def hub_name(self) -> str:
        """The Hub config this run pushes to by default: its parameters (and shard) in the name."""
        s = self.search
        return config_name(
            ("", s.strategy),
            ("T", s.temperature),
            ("n", s.n),
            ("seed", self.seed),
            ("shard", self.shard.replace("/", "-of-") if self.shard else None),
        )


def run_dir(cfg: GenerateConfig) -> RunDir:
    return RunDir.for_config(cfg, "generate", OUTPUTS, RUN_CONTROL, resume=cfg.resume, overwrite=cfg.overwrite)


def resolve_engine(engine: str) -> str:
    """'auto' -> 'vllm' when vLLM is importable, else 'transformers'; 'vllm' without vLLM is an error."""
    if engine == "auto":
        return "vllm" if vllm_available() else "transformers"
    if engine == "vllm" and not vllm_available():
        raise ConfigError(
            "engine: vllm is not installed here: `make install-vllm` (CPU, into .venv-vllm) "
            "or `pip install vllm` (GPU); or use --engine transformers"
        )
    return engine


def load_policy(cfg: GenerateConfig) -> Policy:
    """One engine per process: build it once and reuse it for every batch."""
    from synth.models import resolve_model

    engine = resolve_engine(cfg.engine)
    log.info("policy engine: %s", engine)
    if engine == "openai":
        from synth.generate.openai_engine import OpenAIPolicy

        return OpenAIPolicy(resolve_model(cfg.model), system_prompt=cfg.system_prompt, options=cfg.openai)
    if engine == "vllm":
        from synth.generate.vllm import VLLMPolicy

        return VLLMPolicy(
            resolve_model(cfg.model), system_prompt=cfg.system_prompt, dtype=cfg.dtype, seed=cfg.seed, options=cfg.vllm
        )
    from synth.generate.hf import TransformersPolicy

    return TransformersPolicy(
        resolve_model(cfg.model), system_prompt=cfg.system_prompt, batch_size=cfg.batch_size, dtype=cfg.dtype
    )


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
        # a selector without a pick (naive and weighted need PRM scores) is null, its verification too
        **{f"{how}_answer": answers[picks[how]] if picks.get(how) is not None else None for how in SELECTORS},
        **{
            f"{how}_verified": (bool(verified[picks[how]]) if picks[how] is not None else False)
            if how in picks
            else None
            for how in SELECTORS
        },
        "generated_tokens": result.cost.generated_tokens,
        "prefill_tokens": result.cost.prefill_tokens,
        "cached_tokens": result.cost.cached_tokens,
        "prm_steps": result.cost.prm_steps,
        "tree": json.dumps(result.tree) if result.tree is not None else None,
        "leaves": [t.tree.get("node") if t.tree else None for t in traces] if result.tree is not None else None,
        "strategy": cfg.search.strategy,
        "n": cfg.search.n,
        "temperature": cfg.search.temperature,
        "seed": cfg.seed,
        "model": cfg.model,
        "metadata": json.dumps(problem.metadata, default=str),
    }


def check_unchanged(rows: list[dict[str, Any]], problems: list[Problem], journal: Path) -> None:
    """Finished rows must still match the pool's problems (same id, text and gold answer)."""
    by_id = {p.id: p for p in problems}
    for row in rows:
        problem = by_id.get(row["id"])
        if problem is None:
            raise PoolChanged(
                f"--resume: {journal} holds problem {row['id']!r}, which the pool no longer has; "
                "the pool changed since the run started: --overwrite true to start over, or a new output_dir"
            )
        if fingerprint(row["id"], row["problem"], row["gold_answer"]) != problem.fingerprint():
            raise PoolChanged(
                f"--resume: problem {row['id']!r} changed since the run started (its text or gold answer "
                "differs from the finished row's): --overwrite true to start over, or a new output_dir"
            )


def fitting(problems: list[Problem], policy: Policy, search: SearchConfig) -> tuple[list[Problem], list[str]]:
    """The problems whose prompt leaves room for a whole completion in the model's context, and the ids of
    the others (a 5 MB problem would otherwise end the run in an out-of-memory error, on every resume)."""
    room = policy.max_model_len - search.max_completion_tokens()
    keep, skipped = [], []
    for p in problems:
        # a token covers at least one character: a prompt this short fits without tokenizing it
        short = len(p.problem) + 512 <= room
        (keep if short or policy.count_tokens(policy.chat_prompt(p.problem)) <= room else skipped).append(p)
    if skipped:
        log.warning(
            "skipped %d problems too long for the model (%d tokens of context, %d kept for the completion; first: %s)",
            len(skipped),
            policy.max_model_len,
            search.max_completion_tokens(),
            ", ".join(p.id for p in skipped[:5]),
        )
    return keep, [p.id for p in skipped]


def generate(
    cfg: GenerateConfig,
    policy: Policy | None = None,
    prm: PRM | None = None,
    worker_setup: Callable[[GenerateConfig], tuple[Policy, PRM | None]] | None = None,
) -> dict[str, Any]:
    """Run the search over the pool; returns the summary metrics. Safe to interrupt and resume.

    `policy` / `prm`: engines built already (local launcher). `worker_setup`: what a Ray worker calls to build
    its engines (default `load_engines`; a module-level function)."""
    run = run_dir(cfg).check()
    problems, report = load_pool_with_report(cfg.pool)
    if cfg.shard:
        problems = shard(problems, *parse_shard(cfg.shard))
    journal = Journal(run.path / "rows.jsonl")
    if run.existing and cfg.resume:
        check_unchanged(journal.read(), problems, journal.path)
    check_push(cfg)
    distributed = cfg.launcher == "ray"
    if distributed:  # the workers build the engines; here only what validation needs
        from synth.prm.load import check_prm

        if cfg.prm:
            check_prm(cfg.prm)
        require_prm(cfg.search.strategy, cfg.prm)
        counter = policy or PromptCounter(cfg)
    else:
        if prm is None and cfg.prm:
            from synth.prm.load import load_prm

            prm = load_prm(cfg.prm, dtype=cfg.prm_dtype, engine=cfg.prm_engine)
        require_prm(cfg.search.strategy, prm)
        warn_on_step_cut(prm, cfg)
        policy = counter = policy or load_policy(cfg)
    problems, too_long = fitting(problems, counter, cfg.search)
    if not problems:
        raise ConfigError(
            f"every problem of the pool is too long for {cfg.model} ({counter.max_model_len} tokens of context)"
        )
    shared = None
    if distributed:
        engines = (worker_setup or load_engines, (cfg,))
    else:  # shared: timed (the summary's policy_s / prm_s), and safe for overlapping batches
        shared = shared_engines(policy, prm, threading.Event())
        engines = (_given, (shared.policy, shared.prm))
    with run.claim():
        skipped = {"skipped_no_answer": len(report.skipped_ids), "skipped_too_long": len(too_long)}
        return _run(cfg, run.path, journal, problems, engines, skipped, shared)


def warn_on_step_cut(prm: PRM | None, cfg: GenerateConfig) -> None:
    trained_on = getattr(prm, "step_cut", None)
    if trained_on and trained_on != cfg.search.step_cut:
        log.warning(
            "PRM %s was trained on %s steps but search.step_cut is %s: it scores steps unlike its training data "
            "(--prm default scores delimiter steps, --prm default-sentence sentence steps)",
            cfg.prm,
            trained_on,
            cfg.search.step_cut,
        )


def load_engines(cfg: GenerateConfig) -> tuple[Policy, PRM | None]:
    """A worker's engines: the policy and, when the search uses one, the PRM."""
    prm = None
    if cfg.prm:
        from synth.prm.load import load_prm

        prm = load_prm(cfg.prm, dtype=cfg.prm_dtype, engine=cfg.prm_engine)
        warn_on_step_cut(prm, cfg)
    return load_policy(cfg), prm


def _given(policy: Policy, prm: PRM | None) -> tuple[Policy, PRM | None]:
    return policy, prm


class PromptCounter(ChatPrompts):
    """What the length check needs of a policy (its tokenizer, chat template and context), without its weights."""

    def __init__(self, cfg: GenerateConfig):
        from transformers import AutoConfig, AutoTokenizer

        from synth.models import resolve_model

        path = resolve_model(cfg.model)
        self.tokenizer, self.system_prompt = AutoTokenizer.from_pretrained(path), cfg.system_prompt
        context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None) or 2048
        self.max_model_len = min(context, cfg.vllm.max_model_len or context)


def search_rows(state: tuple[GenerateConfig, Policy, PRM | None], batch: list[Problem]) -> list[dict[str, Any]]:
    """One batch, searched and verified: its dataset rows (what a worker returns)."""
    cfg, policy, prm = state
    results = run_search(policy, batch, cfg.search, batch_seed(cfg.seed, batch), prm)
    flat = [t for r in results for t in r.traces]
    for t, ok in zip(
        flat, verify_answers([t.answer for t in flat], [p for p, r in zip(batch, results) for _ in r.traces])
    ):
        t.verified = ok
    return [problem_row(p, r, cfg) for p, r in zip(batch, results)]


def _setup_worker(cfg: GenerateConfig, setup: Callable, args: tuple) -> tuple[GenerateConfig, Policy, PRM | None]:
    policy, prm = setup(*args)
    return cfg, policy, prm


def _run(
    cfg: GenerateConfig,
    out: Path,
    journal: Journal,
    problems: list[Problem],
    engines: tuple[Callable, tuple],
    skipped: dict[str, int],
    shared: SharedEngines | None = None,
) -> dict[str, Any]:
    rows = journal.read()
    done = {r["id"] for r in rows}
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info("resuming: %d problems done, %d to go", len(done), len(todo))
    batches = [todo[i : i + cfg.problems_per_batch] for i in range(0, len(todo), cfg.problems_per_batch)]
    started, new_tokens, launch = time.perf_counter(), 0, {}
    try:
        with tqdm(
            total=len(problems),
            initial=len(problems) - len(todo),
            desc=f"{cfg.search.strategy} N={cfg.search.n}",
            unit="problem",
        ) as bar:
            for _, new_rows in run_batches(
                cfg.launcher,
                cfg.ray,
                _setup_worker,
                (cfg, *engines),
                search_rows,
                batches,
                cfg.vllm.tensor_parallel_size if resolve_engine(cfg.engine) == "vllm" else 1,
                launch,
                cfg.overlap,
                shared.stop if shared else None,
                shared.serve_until if shared else None,
            ):
                journal.append(new_rows)
                rows.extend(new_rows)
                new_tokens += sum(r["generated_tokens"] for r in new_rows)
                stats = summarize(rows)
                bar.update(len(new_rows))
                maj = f"maj@{stats['n']}"
                bar.set_postfix(
                    {
                        "tok/s": f"{new_tokens / (time.perf_counter() - started):.0f}",
                        "pass@1": f"{stats['pass@1']:.2f}",
                        maj: f"{stats[maj]:.2f}",
                    }
                )
    except KeyboardInterrupt:
        log.warning(
            "interrupted: %d of %d problems saved in %s; rerun with --resume true to continue",
            len(rows),
            len(problems),
            journal.path,
        )
        raise
    elapsed = time.perf_counter() - started
    order = {p.id: i for i, p in enumerate(problems)}
    rows = sorted((r for r in rows if r["id"] in order), key=lambda r: order[r["id"]])
    summary = {**summarize(rows), **{k: v for k, v in {**skipped, **launch}.items() if v}}
    summary["wall_s"] = round(elapsed, 1)
    if shared:  # where this run's time went: in the policy, in the PRM (overlapping when overlap > 1)
        summary["policy_s"] = round(shared.policy.busy.busy_s, 1)
        if shared.prm is not None:
            summary["prm_s"] = round(shared.prm.busy.busy_s, 1)
    summary["new_tokens_per_s"] = round(new_tokens / elapsed, 1) if elapsed > 0 else 0.0
    card = {
        "name": f"synth {cfg.search.strategy} on {cfg.model}",
        "model": cfg.model,
        "config": to_dict(cfg),
        "summary": summary,
        "command": "generate",
    }
    write_dataset(rows, out, card, kind="generate", extra=curves_section(rows, out, cfg.search.strategy))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
    lines = [
        f"{k.ljust(width)}  {v:.3f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}" for k, v in summary.items()
    ]
    return "\n".join(lines)
