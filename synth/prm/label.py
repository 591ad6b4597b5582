"""`synth label`: step labels from Monte-Carlo rollouts (Math-Shepherd style).

For each trace of a `synth generate` dataset and each of its step prefixes, K completions are
rolled out with the policy and verified against the gold answer. The soft label of a step is the
fraction of correct rollouts, the hard label whether any was correct. A trace's last step is
labelled by the trace's own verification (no rollout needed). Output: the stepwise TRL format
(`prompt`, `completions`, `labels`: booleans, any rollout correct) plus `soft_labels` (the fraction
correct) and provenance, written incrementally.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from synth.cards import display
from synth.config import ConfigError, _coerce, check_fields, to_dict
from synth.formats import hard_label_column
from synth.generate.engine import DEFAULT_SYSTEM_PROMPT, Policy, SamplingParams
from synth.hub import PUSH_KEYS, PushConfig, check_push
from synth.journal import Journal
from synth.launch import Launcher, RayConfig, run_batches
from synth.models import AUTO_DTYPE_HELP, AutoDtype
from synth.problems import parse_shard, resolve_shard, shard
from synth.records import Problem
from synth.rundir import RunDir
from synth.steps import StepCut, StepRule
from synth.verify import extract_answer, verify_answers

log = logging.getLogger(__name__)

OUTPUTS = ("rows.jsonl", "data", "data.tmp", "README.md", "summary.json")
RUN_CONTROL = ("batch_size", "traces_per_batch", "launcher", "ray", *PUSH_KEYS)


class LabelsChanged(ConfigError):
    """A resumed labelling run whose source traces are no longer the ones its rows labelled."""


@dataclass
class LabelConfig(PushConfig):
    dataset: str = field(default="", metadata={"help": "A `synth generate` output dir (its traces get labelled)."})
    model: str = field(default="smollm2-135m", metadata={"help": "Policy used for the rollouts."})
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System prompt (use the one the traces were generated with)."}
    )
    rollouts: int = field(default=4, metadata={"range": "[1, inf)", "help": "K: rollouts per step prefix."})
    temperature: float = field(default=0.8, metadata={"range": "[0, inf)", "help": "Rollout sampling temperature."})
    max_tokens: int = field(default=160, metadata={"range": "[1, inf)", "help": "Max new tokens per rollout."})
    step_delimiter: str = field(
        default="\n\n", metadata={"help": "Step delimiter of the traces (step_cut: delimiter)."}
    )
    step_cut: StepCut = field(
        default="delimiter",
        metadata={
            "help": (
                "delimiter: label the traces' own steps; sentence: cut each completion into sentences first (the steps "
                "of `search.step_cut: sentence`), rollouts continue right after a sentence's full stop."
            )
        },
    )
    traces_per_problem: int = field(
        default=4,
        metadata={"range": "[1, inf)", "help": "Traces labelled per problem (verified and unverified mixed)."},
    )
    max_steps: int = field(default=8, metadata={"range": "[1, inf)", "help": "Skip traces with more steps than this."})
    traces_per_batch: int = field(
        default=16,
        metadata={"range": "[1, inf)", "help": "Traces whose prefixes share one engine call; the unit saved at once."},
    )
    batch_size: int = field(
        default=64, metadata={"range": "[1, inf)", "help": "Max sequences per engine forward batch."}
    )
    dtype: AutoDtype = field(
        default="auto", metadata={"help": f"Policy weights dtype for the rollouts: {AUTO_DTYPE_HELP}."}
    )
    output_dir: str = field(default="runs/labels", metadata={"help": "Where the stepwise dataset goes."})
    shard: str | None = field(
        default=None,
        metadata={"help": ("Label shard 'i/n' of the problems only (parallel lanes); `synth merge` joins the shards.")},
    )
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted labelling run."})
    overwrite: bool = field(
        default=False, metadata={"help": "Start over: clear the synth label run in output_dir first."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for trace choice and rollouts."})
    method: Literal["mc", "binary", "trees"] = field(
        default="mc",
        metadata={
            "help": (
                "mc: K rollouts from every step prefix (Math-Shepherd); binary: binary search for a wrong trace's first "
                "wrong step, O(log steps) rollout groups (OmegaPRM); trees: no rollouts, read off the run's search trees "
                "(beam search, DVTS, particle filtering, MCTS): a node's label is the fraction of verified leaves below it "
                "(MCTS with rollouts: its Q-value)."
            )
        },
    )
    min_support: int = field(
        default=2,
        metadata={
            "range": "[1, inf)",
            "help": (
                "method trees: the fewest leaves (or MCTS visits) a node's label may rest on; a trace's row stops before the "
                "first node with fewer."
            ),
        },
    )
    launcher: Launcher = field(
        default="local",
        metadata={
            "help": (
                "Where batches are labelled: local (this process), or ray (a pool of Ray actors, the ray: section)."
            )
        },
    )
    ray: RayConfig = field(default_factory=RayConfig)

    RENAMED = {**PushConfig.RENAMED, "from_trees": "method"}  # `--from_trees` is `--method trees` (see upgrade)

    @classmethod
    def upgrade(cls, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        data = PushConfig.upgrade(data, prefix)
        if "from_trees" in data:
            value = _coerce(data.pop("from_trees"), bool, f"{prefix}from_trees")
            if value and data.get("method", "trees") != "trees":
                raise ConfigError(f"{prefix}from_trees contradicts {prefix}method {data['method']!r}")
            if value:
                data["method"] = "trees"
        return data

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self)
        StepRule(self.step_cut, self.step_delimiter)  # validates step_cut / step_delimiter
        self.shard = resolve_shard(self.shard)

    @property
    def step_rule(self) -> StepRule:
        return StepRule(self.step_cut, self.step_delimiter)


def pick_traces(
    rows: list[dict], per_problem: int, max_steps: int, seed: int, rule: StepRule = StepRule()
) -> list[dict]:
    """Finished traces with an answer, verified and unverified alternating, per problem.

    Each item has `steps` (what gets labelled) and `pieces` (the exact prefix text each step adds)."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        problem = Problem(
            row["id"], row["problem"], row["gold_answer"], row["source"], json.loads(row["metadata"] or "{}")
        )
        cut = [
            [("", s) for s in steps] if rule.cut == "delimiter" else rule.cut_text(text)
            for steps, text in zip(row["steps"], row["completions"])
        ]
        good, bad = [], []
        for i, pairs in enumerate(cut):
            if not row["finished"][i] or not pairs or len(pairs) > max_steps or row["answers"][i] is None:
                continue
            (good if row["verified"][i] else bad).append(i)
        rng.shuffle(good)
        rng.shuffle(bad)
        chosen = [x for pair in zip(good, bad) for x in pair] + good[len(bad) :] + bad[len(good) :]
        for i in chosen[:per_problem]:
            out.append(
                {
                    "key": f"{row['id']}#{i}",
                    "problem": problem,
                    "steps": [s for _, s in cut[i]],
                    "pieces": [rule.piece(lead, s) for lead, s in cut[i]],
                    "verified": bool(row["verified"][i]),
                }
            )
    return out


def rollout_successes(
    policy: Policy, items: list[dict], probes: list[tuple[int, int]], cfg: LabelConfig, seed: int
) -> tuple[dict[tuple[int, int], int], int]:
    """K rollouts from each probed prefix (item j, its first k steps), one engine call: the number that reach a
    verified answer, per probe, and the tokens generated."""
    if not probes:
        return {}, 0
    prefixes = ["".join(items[j]["pieces"][:k]) for j, k in probes]
    prompts = [policy.chat_prompt(items[j]["problem"].problem) + prefix for (j, _), prefix in zip(probes, prefixes)]
    outs = policy.generate(
        prompts, SamplingParams(n=cfg.rollouts, max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=seed)
    )
    answers = [extract_answer(prefix + c.text) for prefix, cs in zip(prefixes, outs) for c in cs]
    ok = verify_answers(answers, [items[j]["problem"] for (j, _), cs in zip(probes, outs) for _ in cs])
    correct = {
        probe: sum(bool(v) for v in ok[i * cfg.rollouts : (i + 1) * cfg.rollouts]) for i, probe in enumerate(probes)
    }
    return correct, sum(c.num_tokens for cs in outs for c in cs)


def label_row(it: dict, soft: list[float], support: list[int], cfg: LabelConfig) -> dict:
    return {
        "id": it["key"],
        "prompt": it["problem"].problem,
        "completions": it["steps"],
        "labels": [x > 0 for x in soft],
        "soft_labels": soft,
        "support": support,
        "problem_id": it["problem"].id,
        "verified": it["verified"],
        "rollouts": cfg.rollouts,
        "policy": cfg.model,
        "step_cut": cfg.step_cut,
        "source": it["problem"].source,
    }


def label_batch(policy: Policy, items: list[dict], cfg: LabelConfig, seed: int) -> tuple[list[dict], int]:
    """Step labels of a batch of traces (rows, rollout tokens): Monte-Carlo (`method: mc`, every non-final prefix
    in one engine call) or by binary search for the first wrong step (`method: binary`)."""
    if cfg.method == "binary":
        return binary_search_batch(policy, items, cfg, seed)
    probes = [(j, k) for j, it in enumerate(items) for k in range(1, len(it["steps"]))]
    correct, tokens = rollout_successes(policy, items, probes, cfg, seed)
    rows = []
    for j, it in enumerate(items):
        soft = [correct[(j, k)] / cfg.rollouts for k in range(1, len(it["steps"]))] + [float(it["verified"])]
        rows.append(label_row(it, soft, [cfg.rollouts] * (len(soft) - 1) + [1], cfg))
    return rows, tokens


def binary_search_batch(policy: Policy, items: list[dict], cfg: LabelConfig, seed: int) -> tuple[list[dict], int]:
    """OmegaPRM-style labels: a verified trace's steps are all right (it reached the answer from each of its
    prefixes); in a wrong trace the first wrong step is found by binary search over its prefixes (a prefix is
    still right when one of K rollouts from it reaches the answer), O(log steps) rollout groups instead of one
    per step; the steps before it are right, the rest wrong. All traces search in lockstep: one engine call per
    round. Probed steps carry their rollout fraction (support K); inferred ones their 0 or 1 (support 0)."""
    bounds = {j: [1, len(it["steps"])] for j, it in enumerate(items) if not it["verified"] and len(it["steps"]) > 1}
    measured: dict[tuple[int, int], int] = {}
    tokens, round_ = 0, 0
    while any(lo < hi for lo, hi in bounds.values()):
        probes = [(j, (lo + hi) // 2) for j, (lo, hi) in bounds.items() if lo < hi]
        correct, n = rollout_successes(policy, items, probes, cfg, seed + round_)
        tokens, round_ = tokens + n, round_ + 1
        for (j, mid), hits in correct.items():
            measured[(j, mid)] = hits
            bounds[j] = [mid + 1, bounds[j][1]] if hits else [bounds[j][0], mid]
    rows = []
    for j, it in enumerate(items):
        steps = len(it["steps"])
        first_bad = bounds[j][0] if j in bounds else (steps + 1 if it["verified"] else steps)
        soft, support = [], []
        for k in range(1, steps + 1):
            if k == steps:
                soft.append(float(it["verified"]))
                support.append(1)
            elif (j, k) in measured:
                soft.append(measured[(j, k)] / cfg.rollouts)
                support.append(cfg.rollouts)
            else:
                soft.append(1.0 if k < first_bad else 0.0)
                support.append(0)  # inferred, not measured
        rows.append(label_row(it, soft, support, cfg))
    return rows, tokens


def run_dir(cfg: LabelConfig) -> RunDir:
    return RunDir.for_config(cfg, "label", OUTPUTS, RUN_CONTROL, resume=cfg.resume, overwrite=cfg.overwrite)


def check_unchanged(done: list[dict], items: list[dict], journal: Path) -> None:
    """Labelled rows must still be the traces the source dataset holds (same problem and steps)."""
    by_key = {it["key"]: it for it in items}
    for row in done:
        it = by_key.get(row["id"])
        if it is None or it["problem"].problem != row["prompt"] or it["steps"] != row["completions"]:
            raise LabelsChanged(
                f"--resume: {journal} labelled trace {row['id']!r}, which the dataset no longer holds as it "
                "was (the source run changed): --overwrite true to start over, or a new output_dir"
            )


def label(cfg: LabelConfig, policy: Policy | None = None) -> dict:
    from synth.hub import read_rows

    if not cfg.dataset:
        raise ConfigError("label needs --dataset: the output dir of a `synth generate` run")
    if not Path(cfg.dataset).exists():
        raise ConfigError(f"dataset not found: {cfg.dataset}")
    run = run_dir(cfg).check()
    rows = read_rows(cfg.dataset)
    if cfg.method == "trees":
        return label_from_trees(cfg, run, rows)
    items = pick_traces(rows, cfg.traces_per_problem, cfg.max_steps, cfg.seed, cfg.step_rule)
    if cfg.shard:
        # Traces are picked from the whole dataset first so every shard agrees with an unsharded run.
        ids = {r["id"] for r in shard(rows, *parse_shard(cfg.shard))}
        items = [it for it in items if it["problem"].id in ids]
    journal = Journal(run.path / "rows.jsonl")
    if run.existing and cfg.resume:
        check_unchanged(journal.read(), items, journal.path)
    check_push(cfg)
    done = {r["id"] for r in journal.read()} if run.existing and cfg.resume else set()
    todo = [it for it in items if it["key"] not in done]
    rollouts = any(len(it["steps"]) > 1 for it in todo)  # last steps need no rollout
    if cfg.launcher == "ray" or not rollouts:
        engines = (load_rollout_policy, (cfg,)) if rollouts else (_given, (None,))
    else:
        engines = (_given, (policy or load_rollout_policy(cfg),))
    batches = [
        (start, todo[start : start + cfg.traces_per_batch]) for start in range(0, len(todo), cfg.traces_per_batch)
    ]
    with run.claim():
        started, tokens, steps = time.perf_counter(), 0, 0
        launcher = cfg.launcher if rollouts else "local"
        with tqdm(
            total=len(items), initial=len(items) - len(todo), desc=f"label K={cfg.rollouts}", unit="trace"
        ) as bar:
            for _, (new, n_tok) in run_batches(launcher, cfg.ray, _setup_worker, (cfg, *engines), label_rows, batches):
                journal.append(new)
                tokens += n_tok
                steps += sum(len(r["completions"]) for r in new)
                bar.update(len(new))
        elapsed = time.perf_counter() - started
        all_rows = journal.read()
        stats = label_stats(all_rows, tokens, elapsed, steps)
        write_labels(run, all_rows, cfg, stats, f"synth step labels ({cfg.rollouts} rollouts)")
    return stats


def label_from_trees(cfg: LabelConfig, run: RunDir, rows: list[dict]) -> dict:
    """Labels read off the stored search trees (no policy, no rollouts), written like rollout labels."""
    from synth.prm.tree_labels import tree_label_rows

    if cfg.shard:
        rows = shard(rows, *parse_shard(cfg.shard))
    labelled = tree_label_rows(rows, cfg.min_support, cfg.step_cut)
    if not labelled:
        raise ConfigError(
            f"{cfg.dataset}: no search tree to label (rows of beam_search, dvts, particle_filtering or "
            "mcts runs), or no node rests on min_support leaves"
        )
    check_push(cfg)
    started = time.perf_counter()
    with run.claim():
        journal = Journal(run.path / "rows.jsonl")
        journal.path.unlink(missing_ok=True)  # derived from the trees in one go: rebuilt, not resumed
        journal.append(labelled)
        stats = label_stats(labelled, elapsed=time.perf_counter() - started)
        intermediate = sum(len(r["completions"]) - 1 for r in labelled)
        stats.update(rollouts_used=0, rollouts_saved=cfg.rollouts * intermediate, tree_labelled_steps=intermediate)
        write_labels(run, labelled, cfg, stats, "synth step labels (from search trees)")
    return stats


def load_rollout_policy(cfg: LabelConfig) -> Policy:
    from synth.generate.hf import TransformersPolicy
    from synth.models import resolve_model

    return TransformersPolicy(
        resolve_model(cfg.model), system_prompt=cfg.system_prompt, batch_size=cfg.batch_size, dtype=cfg.dtype
    )


def _given(policy: Policy | None) -> Policy | None:
    return policy


def _setup_worker(cfg: LabelConfig, setup, args: tuple) -> tuple[LabelConfig, Policy | None]:
    return cfg, setup(*args)


def label_rows(state: tuple[LabelConfig, Policy | None], batch: tuple[int, list[dict]]) -> tuple[list[dict], int]:
    """One batch of traces labelled (what a worker returns): its rows and the rollout tokens."""
    cfg, policy = state
    start, items = batch
    return label_batch(policy, items, cfg, cfg.seed + start)


def write_labels(run: RunDir, rows: list[dict], cfg: LabelConfig, stats: dict, name: str) -> None:
    """The label dataset (parquet + card) and summary.json of a finished label run."""
    from synth.hub import write_dataset

    card = {"name": name, "model": cfg.model, "config": to_dict(cfg), "summary": stats, "command": "label"}
    write_dataset(rows, run.path, card, kind="labels", body=label_body(cfg, stats))
    (run.path / "summary.json").write_text(json.dumps(stats, indent=2))


def label_body(cfg: LabelConfig, stats: dict) -> str:
    """The card body of a step-label dataset."""
    how = {
        "trees": f"read off the search trees of `{display(cfg.dataset)}` without rollouts: a step's label is the fraction "
        f"of verified final leaves below its node (each resting on at least {cfg.min_support}, `support`)",
        "binary": f"made by binary search for each wrong trace's first wrong step ({cfg.rollouts} rollouts of "
        f"`{cfg.model}` from each probed prefix, verified against the gold answer; the steps between are inferred)",
        "mc": f"made from Monte-Carlo rollouts: for every step prefix of a trace, {cfg.rollouts} rollouts of "
        f"`{cfg.model}` are verified against the gold answer",
    }[cfg.method]
    return f"""Step labels {how}. `labels` (booleans: the step
can lead to a right answer) and `soft_labels` (how often it did) hold one value per step of `completions`, and
`support` how many samples each rests on; a trace's last step is labelled by the trace's own verification. The stepwise format of TRL's PRM datasets (`prompt`,
`completions`, `labels`); `synth train-prm` trains on it.

- Traces: {stats["traces"]}, steps: {stats["steps"]}, positive steps: {stats["positive_rate"]:.3f}
- Steps cut at: `{cfg.step_cut}`
"""


def label_stats(rows: list[dict], new_tokens: int = 0, elapsed: float = 0.0, new_steps: int = 0) -> dict:
    """Counts of a stepwise label set: traces, steps, rollouts per labelled step, positive rate, cost."""
    hard = hard_label_column(rows[0] if rows else ())
    all_steps = sum(len(r["completions"]) for r in rows)
    # rollouts actually spent: a probed step's support is its K rollouts; inferred steps (support 0), the final
    # step (its own verification) and tree labels (leaf counts, no rollouts) cost none
    rollout_steps = sum(sum(r.get("support", [])[:-1]) for r in rows if int(r.get("rollouts", 0)) > 0)
    return {
        "traces": len(rows),
        "steps": all_steps,
        "rollouts_per_labelled_step": rollout_steps / max(all_steps, 1),
        "positive_rate": sum(sum(map(bool, r[hard])) for r in rows) / max(sum(len(r[hard]) for r in rows), 1),
        "new_rollout_tokens": new_tokens,
        "wall_s": round(elapsed, 1),
        "seconds_per_100_steps": round(100 * elapsed / new_steps, 1) if new_steps else None,
    }
