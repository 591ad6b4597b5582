"""`synth rounds`: self-improvement rounds (expert iteration / ReST-EM) on a training pool, evaluated on
one or more named held-out pools.

Round 0 evaluates the base policy. Round k >= 1:

    generate   policy_{k-1} (+ PRM_{k-1}) searches the training pool           round-k/generate
    sft_data   verified, finished traces, deduplicated, k shortest per problem   round-k/sft_data
               (training problems that also appear in any eval pool are dropped)
    label      (train_prm) Monte-Carlo step labels of those traces              round-k/label
    prm        (train_prm) a new PRM on the base backbone                       round-k/prm
    sft        SFT from the base (from_base, ReST-EM) or from policy_{k-1}      round-k/sft  -> policy_k
    eval_greedy   policy_k, n=1 at temperature 0 on each eval pool              round-k/eval_greedy[-<pool>]
    eval_search   policy_k (+ PRM_k), the search at N = eval_n, each eval pool  round-k/eval_search[-<pool>]

With `eval_pools` (named pools, e.g. an in-distribution one and one of families no training pool has) each
pool gets its own stages, suffixed with its name; with the single `eval_pool` they are unsuffixed.
`select_round: <pool>` makes the round with the best greedy accuracy on that pool the output
(`selected.json`), not always the last one.

Every stage writes `done.json` when it finishes and is skipped on a rerun, so an interrupted run
continues at the stage it was in (which itself resumes from its journal or last checkpoint).
`report.md`, `rounds.json` and `rounds.png` in output_dir are rewritten after every round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.config import check_fields
from synth.filter.select import normalize
from synth.generate.run import GenerateConfig, generate
from synth.generate.search import SearchConfig, require_prm
from synth.hub import PUSH_KEYS, PushConfig, check_push
from synth.journal import Journal
from synth.prm.label import LabelConfig, label
from synth.prm.train import TrainPRMConfig, train_prm
from synth.problems import PoolConfig, load_pool
from synth.rundir import RunDir
from synth.train.report import add_report_to_card, round_summary, select_round, write_report
from synth.train.sft import TrainConfig, train_sft
from synth.train.stages import ModelCache, private_datasets_cache, read_marker, run_stage

log = logging.getLogger(__name__)

# Keys of the sub-commands' configs that rounds sets itself, per round.
OWNED = {
    "generate": ("model", "prm", "pool", "output_dir", "resume", "overwrite", "shard", *PUSH_KEYS),
    "sft": ("model", "dataset", "output_dir", "resume", "overwrite"),
    "label": (
        "model",
        "dataset",
        "output_dir",
        "resume",
        "overwrite",
        "system_prompt",
        "batch_size",
        "step_cut",
        "step_delimiter",
        "shard",
        *PUSH_KEYS,
    ),
    "prm_train": ("model", "dataset", "output_dir", "resume", "overwrite"),
}
# Generate settings that recipes used to give at the top level; they live in `generate:` now.
MOVED_TO_GENERATE = ("system_prompt", "dtype", "batch_size", "problems_per_batch", "seed", "search")
OUTPUTS = ("round-*", "report.md", "rounds.json", "rounds.png", "selected.json")
POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
# Keys that may change between a run and its continuation.
RUN_CONTROL = (
    "rounds",
    "select_round",
    "eval_search",
    "generate.batch_size",
    "generate.vllm",
    "generate.launcher",
    "generate.ray",
    "label.launcher",
    "label.ray",
    *PUSH_KEYS,
)


@dataclass
class RoundsConfig(PushConfig):
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Base policy: 'smollm2-135m' (bundled), a local checkpoint, or a Hub id."},
    )
    prm: str | None = field(
        default=None,
        metadata={
            "help": "PRM for search and selection ('default', a PRM dir) or null; with train_prm the PRM of round 0."
        },
    )
    rounds: int = field(
        default=2,
        metadata={"range": "[0, inf)", "help": "Self-improvement rounds after round 0 (the base model's evaluation)."},
    )
    output_dir: str = field(
        default="runs/rounds", metadata={"help": "Where round-{k}/ stage dirs, report.md and rounds.png go."}
    )
    from_base: bool = field(
        default=True,
        metadata={
            "help": "Fine-tune the base model each round on that round's data (ReST-EM); false: continue from the last policy."
        },
    )
    train_prm: bool = field(
        default=False,
        metadata={"help": "Also label each round's traces and train a new PRM for the next round's search."},
    )
    top_k: int = field(
        default=4,
        metadata={
            "range": "[1, inf)",
            "help": "Verified completions kept per problem for SFT (the shortest, duplicates dropped).",
        },
    )
    eval_n: int = field(
        default=8,
        metadata={"range": "[1, inf)", "help": "N of the search evaluation on the held-out pool (maj@N, pass@N)."},
    )
    eval_search: bool = field(
        default=True,
        metadata={"help": "Also run the search at N = eval_n on every eval pool each round; false: greedy only."},
    )
    n_per_round: list[int] | None = field(
        default=None,
        metadata={
            "help": (
                "N of the training-pool search per round (round k uses entry k-1; rounds past the end use the last); "
                "null: generate.search.n every round."
            )
        },
    )
    # Sections keep their commands' defaults (a recipe's section starts from them): set the pools' seeds.
    train_pool: PoolConfig = field(default_factory=PoolConfig)
    eval_pool: PoolConfig = field(
        default_factory=PoolConfig, metadata={"help": "The held-out pool (named 'eval'); or give eval_pools."}
    )
    eval_pools: dict[str, PoolConfig] = field(
        default_factory=dict,
        metadata={
            "help": (
                "Named held-out pools, every one evaluated each round ({in_dist: {...}, ood: {...}}: give one of task "
                "families no training pool has); the first is the report's main pool. Empty: eval_pool alone."
            )
        },
    )
    select_round: str | None = field(
        default=None,
        metadata={
            "help": (
                "An eval pool's name: the round whose policy has the best greedy accuracy on it (the earliest of ties) "
                "is the output, in selected.json; null: the last round."
            )
        },
    )
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    sft: TrainConfig = field(default_factory=TrainConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    prm_train: TrainPRMConfig = field(default_factory=TrainPRMConfig)

    @classmethod
    def upgrade(cls, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        data = PushConfig.upgrade(data, prefix)
        moved = [k for k in MOVED_TO_GENERATE if k in data]
        if moved:
            from synth.config import _warn_once

            _warn_once(
                f"rounds: {', '.join(moved)} at the top level are deprecated: give them in the generate: section"
            )
            section = dict(data.get("generate") or {})
            for key in moved:
                section.setdefault(key, data.pop(key))
            data["generate"] = section
        return data

    def __post_init__(self):
        super().__post_init__()
        check_fields(self)
        if self.hub_revision is not None:
            raise ValueError("hub_revision: rounds pushes round k's SFT data to the branch round-k; leave it out")
        if self.eval_pools and self.eval_pool != PoolConfig():
            raise ValueError("give eval_pool or eval_pools (named pools), not both")
        for name, pool in self.pools.items():
            where = f"eval_pools.{name}" if self.eval_pools else "eval_pool"
            if not POOL_NAME.fullmatch(name):
                raise ValueError(f"{where}: a pool name is lower-case letters, digits and '_'")
            if self.train_pool == pool or (
                self.train_pool.source == pool.source == "reasoning_gym" and self.train_pool.seed == pool.seed
            ):
                raise ValueError(
                    f"{where} must be held out from train_pool: give it another seed "
                    "(e.g. train_pool.seed 200, eval pool seed 1000) or another file"
                )
        if self.select_round is not None and self.select_round not in self.pools:
            raise ValueError(
                f"select_round: {self.select_round!r} is not an eval pool (pools: {', '.join(self.pools)})"
            )
        require_prm(self.search.strategy, self.prm)
        try:  # the held-out search at eval_n must be valid too (n vs beam_width)
            dataclasses.replace(self.search, n=self.eval_n)
        except ValueError as err:
            raise ValueError(f"eval_n {self.eval_n}: {err}") from None
        if self.n_per_round is not None and not self.n_per_round:
            raise ValueError("n_per_round: give at least one N (or null for generate.search.n every round)")
        for n in self.n_per_round or []:
            try:
                dataclasses.replace(self.search, n=n)
            except ValueError as err:
                raise ValueError(f"n_per_round {n}: {err}") from None
        for section, keys in OWNED.items():
            sub = getattr(self, section)
            defaults = type(sub)()
            for key in keys:
                if getattr(sub, key) != getattr(defaults, key):
                    raise ValueError(
                        f"{section}.{key} is set by rounds for every round; leave it out "
                        f"(use the top-level {key if key in ('model', 'prm') else 'options'})"
                    )

    @property
    def search(self) -> SearchConfig:
        return self.generate.search

    @property
    def pools(self) -> dict[str, PoolConfig]:
        """The eval pools by name: eval_pools, or eval_pool as 'eval'."""
        return self.eval_pools or {"eval": self.eval_pool}

    def eval_stage(self, kind: str, pool: str) -> str:
        """Stage dir of an evaluation: eval_greedy / eval_search, suffixed with the pool's name for eval_pools."""
        return f"eval_{kind}-{pool}" if self.eval_pools else f"eval_{kind}"


def run_dir(cfg: RoundsConfig) -> RunDir:
    return RunDir.for_config(cfg, "rounds", OUTPUTS, RUN_CONTROL, mode="continue")


class Rounds:
    """Runs the rounds; models are loaded through one `ModelCache`, so each is loaded once."""

    def __init__(
        self,
        cfg: RoundsConfig,
        load_policy: Callable[[str], Any] | None = None,
        load_prm: Callable[[str], Any] | None = None,
    ):
        self.cfg = cfg
        self.run_dir = run_dir(cfg).check()
        check_push(cfg)
        self.out = self.run_dir.path
        self.models = ModelCache(load_policy or self._load_policy, load_prm or self._load_prm)
        self.policy_path, self.prm_spec = cfg.model, cfg.prm

    def _load_policy(self, path: str):
        from synth.generate.run import load_policy

        return load_policy(dataclasses.replace(self.cfg.generate, model=path))

    def _load_prm(self, spec: str):
        from synth.prm.load import load_prm

        return load_prm(spec, dtype=self.cfg.generate.prm_dtype, engine=self.cfg.generate.prm_engine)

    def _gen_cfg(
        self, model: str, prm: str | None, pool: PoolConfig, search: SearchConfig, out: str, seed: int
    ) -> GenerateConfig:
        """The generate settings of one stage: the recipe's `generate:` section with what rounds owns set."""
        return dataclasses.replace(
            self.cfg.generate, model=model, prm=prm, pool=pool, search=search, output_dir=out, resume=True, seed=seed
        )

    def _generate(
        self, d: Path, model: str, prm: str | None, pool: PoolConfig, search: SearchConfig, seed: int
    ) -> dict:
        cfg = self._gen_cfg(model, prm, pool, search, str(d), seed)
        if cfg.launcher == "ray":  # the workers build their own engines
            self.models.release_policy()
            return generate(cfg)
        return generate(cfg, policy=self.models.policy(model), prm=self.models.prm(prm))

    def search_for_round(self, k: int) -> SearchConfig:
        """The training-pool search of round k >= 1 (its N from n_per_round when given)."""
        ns = self.cfg.n_per_round
        return dataclasses.replace(self.cfg.search, n=ns[min(k, len(ns)) - 1]) if ns else self.cfg.search

    def run(self) -> list[dict]:
        with self.run_dir.claim():
            return self._rounds()

    def _rounds(self) -> list[dict]:
        rows = []
        stages = {
            name: (self.cfg.eval_stage("greedy", name), self.cfg.eval_stage("search", name)) for name in self.cfg.pools
        }
        for k in range(self.cfg.rounds + 1):
            self.round(k)
            rows.append(round_summary(self.out / f"round-{k}", k, stages))
            selected = select_round(rows, self.cfg.select_round, self.cfg.model, self.cfg.prm)
            (self.out / "selected.json").write_text(json.dumps(selected, indent=2))
            report = write_report(
                self.out,
                rows,
                f"synth rounds: {self.cfg.model}, {self.cfg.rounds} round(s)"
                + (" (from base)" if self.cfg.from_base else " (continued)"),
                selected,
            )
            data_dir = self.out / f"round-{k}" / "sft_data"
            if k > 0 and (data_dir / "README.md").exists():
                add_report_to_card(data_dir / "README.md", report)
                if self.cfg.push_to_hub:
                    self._push(k, data_dir)
        return rows

    def _push(self, k: int, data_dir: Path) -> None:
        """Round k's SFT data to the Hub on branch round-{k}; a failure is logged, and the next rerun retries."""
        from synth.hub import PushError, push_dataset

        marker = self.out / f"round-{k}" / "push" / "done.json"
        if marker.exists():
            return
        try:
            url = push_dataset(
                data_dir,
                self.cfg.hub_dataset_id,
                private=self.cfg.hub_private,
                config_name=self.cfg.hub_config_name,
                revision=f"round-{k}",
                overwrite=self.cfg.hub_overwrite,
            )
        except PushError as err:
            log.error(
                "round %d: push to %s failed (%s); rerun the same command to retry", k, self.cfg.hub_dataset_id, err
            )
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"stage": "push", "result": {"url": url, "revision": f"round-{k}"}}, indent=2))

    def round(self, k: int) -> None:
        c, rd = self.cfg, self.out / f"round-{k}"

        def stage(name: str, fn: Callable[[Path], dict]) -> dict:
            return run_stage(rd / name, fn, f"round {k} {name}")

        if k > 0:
            policy, prm = self.policy_path, self.prm_spec
            stage(
                "generate",
                lambda d: self._generate(d, policy, prm, c.train_pool, self.search_for_round(k), c.generate.seed + k),
            )
            data = stage("sft_data", lambda d: self._sft_data(d, rd / "generate"))
            if c.train_prm:
                labels = stage("label", lambda d: self._label(d, rd / "generate", policy))
                self.prm_spec = stage("prm", lambda d: self._train_prm(d, rd / "label", labels, prm))["prm"]
            if read_marker(rd / "sft") is None:
                self.models.release_policy()  # training needs the memory
            start = c.model if c.from_base else policy
            self.policy_path = stage("sft", lambda d: self._sft(d, rd / "sft_data", data, start, policy))["model"]
        greedy = SearchConfig(
            strategy="best_of_n",
            n=1,
            temperature=0.0,
            max_tokens=c.search.max_tokens,
            step_delimiter=c.search.step_delimiter,
            step_cut=c.search.step_cut,
        )
        search = dataclasses.replace(c.search, n=c.eval_n)
        policy, prm = self.policy_path, self.prm_spec
        for name, pool in c.pools.items():
            stage(
                c.eval_stage("greedy", name),
                lambda d, pool=pool: self._generate(d, policy, None, pool, greedy, c.generate.seed),
            )
            if c.eval_search:
                stage(
                    c.eval_stage("search", name),
                    lambda d, pool=pool: self._generate(d, policy, prm, pool, search, c.generate.seed),
                )

    def _sft_data(self, d: Path, gen_dir: Path) -> dict:
        """The round's SFT data: the filter pipeline on its traces (verified, finished, exact duplicates
        dropped, the top_k shortest per problem), without any problem of the held-out pool."""
        from synth.filter.run import FilterConfig, select
        from synth.filter.select import Filters, flatten
        from synth.hub import write_dataset

        rows = Journal(gen_dir / "rows.jsonl").read()
        # Held-out problems never reach training: small arithmetic pools of different seeds do overlap.
        held_out = {normalize(p.problem) for pool in self.cfg.pools.values() for p in load_pool(pool)}
        kept = [r for r in rows if normalize(r["problem"]) not in held_out]
        filters = Filters(correctness="verified", near_dup_threshold=None, top_k=self.cfg.top_k, rank_by="shortest")
        examples, _ = select(
            flatten(kept), FilterConfig(format="sft", system_prompt=self.cfg.generate.system_prompt, filters=filters)
        )
        if examples:
            write_dataset(
                examples,
                d,
                {
                    "name": "synth SFT data (verified traces)",
                    "model": rows[0]["model"],
                    "summary": {"examples": len(examples)},
                    "command": "rounds",
                },
                kind="sft",
            )
        return {
            "examples": len(examples),
            "problems": len({e["id"] for e in examples}),
            "pool_problems": len(rows),
            "held_out_overlap": len(rows) - len(kept),
            "dataset": str(d) if examples else None,
        }

    def _sft(self, d: Path, data_dir: Path, data: dict, start: str, previous: str) -> dict:
        if not data["examples"]:
            log.warning("no verified traces this round: the policy stays %s", previous)
            return {"skipped": "no verified traces", "model": previous}
        cfg = dataclasses.replace(self.cfg.sft, model=start, dataset=str(data_dir), output_dir=str(d), resume=True)
        return {**train_sft(cfg), "init": start}

    def _label(self, d: Path, gen_dir: Path, policy: str) -> dict:
        # The PRM trained on these labels scores the next round's search steps: label the same steps.
        cfg = dataclasses.replace(
            self.cfg.label,
            dataset=str(gen_dir),
            model=policy,
            system_prompt=self.cfg.generate.system_prompt,
            batch_size=self.cfg.generate.batch_size,
            output_dir=str(d),
            resume=True,
            step_cut=self.cfg.search.step_cut,
            step_delimiter=self.cfg.search.step_delimiter,
        )
        with private_datasets_cache():  # label reads gen_dir with load_dataset
            return label(cfg, policy=None if cfg.launcher == "ray" else self.models.policy(policy))

    def _train_prm(self, d: Path, label_dir: Path, labels: dict, previous: str | None) -> dict:
        if not labels.get("traces"):
            log.warning("no labelled traces this round: the PRM stays %s", previous)
            return {"skipped": "no labelled traces", "prm": previous}
        cfg = dataclasses.replace(
            self.cfg.prm_train, dataset=str(label_dir), model=self.cfg.model, output_dir=str(d), resume=True
        )
        with private_datasets_cache():  # train-prm reads label_dir with load_dataset
            return {**train_prm(cfg), "prm": str(d / "final")}


def run_rounds(
    cfg: RoundsConfig, load_policy: Callable[[str], Any] | None = None, load_prm: Callable[[str], Any] | None = None
) -> list[dict]:
    """Run (or continue) every round; returns one summary per round (also in rounds.json)."""
    try:
        return Rounds(cfg, load_policy, load_prm).run()
    except KeyboardInterrupt:
        log.warning("interrupted: finished stages are kept in %s; rerun the same command to continue", cfg.output_dir)
        raise
