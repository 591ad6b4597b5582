"""Search strategies behind one interface: best-of-N, beam search and DVTS.

Every strategy returns, per problem, a `SearchResult`: its final traces (finished or not, flagged),
the tree it grew (every node, with parent links, scores and whether it was kept or pruned) and its
cost (tokens generated, tokens prefilled, steps scored by the PRM). All strategies batch across the
problems they are given: one engine call per search iteration, not per problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synth.config import check_fields
from synth.generate.engine import Policy, SamplingParams
from synth.generate.mcts import mcts
from synth.generate.particles import particle_filtering
from synth.generate.tree import Ask, Cost, Expander, Node, SearchResult, complete, dedupe, grow, leaf_trace, tree_dicts
from synth.prm.scorer import PRM, Aggregation, aggregate
from synth.records import Problem, Trace
from synth.steps import StepCut, StepRule
from synth.verify import extract_answer

Strategy = Literal["best_of_n", "beam_search", "dvts", "particle_filtering", "mcts"]


NEEDS_PRM = ("beam_search", "dvts", "particle_filtering", "mcts")  # strategies that rank steps with a PRM


@dataclass
class ParticleConfig:
    """Particle filtering's resampling."""

    temperature: float = field(
        default=1.0,
        metadata={
            "range": "(0, inf)",
            "help": (
                "Resampling temperature: weights are the PRM's odds p/(1-p) to the power 1/temperature (1: its_hub's softmax "
                "over the PRM's logits; higher: closer to uniform)."
            ),
        },
    )
    resampling: Literal["systematic", "multinomial"] = field(
        default="systematic",
        metadata={
            "help": ("systematic (one offset, evenly spaced draws: lower variance) or multinomial (independent draws).")
        },
    )

    def __post_init__(self):
        check_fields(self)


@dataclass
class MCTSConfig:
    """MCTS's selection and evaluation."""

    c_puct: float = field(default=1.0, metadata={"range": "[0, inf)", "help": "Exploration weight of PUCT."})
    rollout: bool = field(
        default=False,
        metadata={
            "help": (
                "Value a new step by a rollout to the end verified against the gold answer (rStar-Math), instead of its PRM "
                "score (problems without a gold answer keep the PRM score)."
            )
        },
    )

    def __post_init__(self):
        check_fields(self)


class PRMRequired(ValueError):
    """A strategy that ranks steps was asked to run without a PRM."""


def require_prm(strategy: str, prm):
    """`prm`, or a one-line error when `strategy` needs one and there is none."""
    if prm is None and strategy in NEEDS_PRM:
        raise PRMRequired(f"search.strategy {strategy} needs a PRM to rank steps: set prm (e.g. --prm default)")
    return prm


@dataclass
class SearchConfig:
    strategy: Strategy = field(default="best_of_n", metadata={"help": "Search strategy."})
    n: int = field(
        default=8,
        metadata={
            "range": "[1, inf)",
            "help": "Completions per problem (N); beam search keeps N beams, DVTS grows N/M subtrees.",
        },
    )
    temperature: float = field(
        default=0.8, metadata={"range": "[0, inf)", "help": "Sampling temperature (0 = greedy)."}
    )
    top_p: float = field(default=1.0, metadata={"range": "(0, 1]", "help": "Nucleus sampling threshold."})
    max_tokens: int = field(
        default=256, metadata={"range": "[1, inf)", "help": "Max new tokens per completion (best-of-N)."}
    )
    step_delimiter: str = field(
        default="\n\n", metadata={"help": "String that separates reasoning steps (step_cut: delimiter)."}
    )
    step_cut: StepCut = field(
        default="delimiter",
        metadata={
            "help": (
                "Where a step ends: at step_delimiter (the blog's '\\n\\n' paragraphs), or 'sentence' (after . ! or ? "
                "followed by whitespace: shorter steps, for a PRM trained on sentence steps)."
            )
        },
    )
    beam_width: int = field(
        default=4,
        metadata={"range": "[1, inf)", "help": "M: expansions per kept beam (beam search) / per subtree step (DVTS)."},
    )
    max_iterations: int = field(default=8, metadata={"range": "[1, inf)", "help": "Max steps of a beam / subtree."})
    step_max_tokens: int = field(
        default=96, metadata={"range": "[1, inf)", "help": "Max new tokens per step (beam search, DVTS)."}
    )
    tail_rows: int = field(
        default=8,
        metadata={
            "range": "[0, inf)",
            "help": (
                "A step's last rows: once no more than this many still decode (and as many have ended), they end "
                "there as at step_max_tokens and go on at the next iteration, so an iteration does not wait on a few "
                "long steps (transformers engine; 0: never)."
            ),
        },
    )
    lookahead: int = field(
        default=0,
        metadata={
            "range": "[0, inf)",
            "help": "Greedy steps rolled out before scoring a candidate (0 as in the blog).",
        },
    )
    filter_duplicates: bool = field(
        default=False, metadata={"help": "Drop candidate steps identical to a sibling's before ranking."}
    )
    aggregation: Aggregation = field(
        default="last", metadata={"help": "How step scores become one score: last, min, prod, mean."}
    )
    particles: ParticleConfig = field(default_factory=ParticleConfig)
    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    complete_leaves: bool = field(
        default=False,
        metadata={
            "help": (
                "Sample every unfinished final candidate (a DVTS subtree's siblings of its finished best step, beams cut by "
                "max_iterations) on to its end (max_tokens), so all N final traces can answer; costs the extra tokens."
            )
        },
    )

    def __post_init__(self):
        check_fields(self)
        try:
            StepRule(self.step_cut, self.step_delimiter)
        except ValueError as err:
            raise ValueError(str(err)) from None
        if self.strategy in ("beam_search", "dvts", "mcts") and self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width}) for {self.strategy}")

    @property
    def step_rule(self) -> StepRule:
        return StepRule(self.step_cut, self.step_delimiter)

    @property
    def needs_prm(self) -> bool:
        return self.strategy in NEEDS_PRM

    def max_completion_tokens(self) -> int:
        """The most tokens one completion can take: what a prompt must leave room for."""
        if self.strategy == "best_of_n":
            return self.max_tokens
        path = self.max_iterations * self.step_max_tokens + self.lookahead * self.step_max_tokens
        rollout = self.complete_leaves or (self.strategy == "mcts" and self.mcts.rollout)
        return path + (self.max_tokens if rollout else 0)


def score_traces(prm: PRM | None, problems: list[Problem], traces: list[list[Trace]], how: Aggregation) -> int:
    """Fill step_scores and score of every trace, in one batched PRM call. Returns steps scored."""
    if prm is None:
        return 0
    flat = [(p, t) for p, ts in zip(problems, traces) for t in ts]
    scores = prm.score([p.problem for p, _ in flat], [t.steps or [t.completion] for _, t in flat])
    for (_, t), s in zip(flat, scores):
        t.step_scores, t.score = s, aggregate(s, how)
    return sum(len(s) for s in scores)


def best_of_n(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """N independent full completions per problem, batched across problems and samples."""
    prompts = [policy.chat_prompt(p.problem) for p in problems]
    params = SamplingParams(n=cfg.n, max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    outputs = policy.generate(prompts, params)
    traces = [
        [_trace(p.id, c.text, cfg, c.num_tokens, c.stop_reason == "eos") for c in outs]
        for p, outs in zip(problems, outputs)
    ]
    steps_scored = score_traces(prm, problems, traces, cfg.aggregation)
    results = []
    for outs, ts in zip(outputs, traces):
        cost = Cost(prm_steps=sum(len(t.step_scores or []) for t in ts), engine_calls=1)
        cost.add(outs)
        results.append(SearchResult(ts, cost))
    assert steps_scored == sum(r.cost.prm_steps for r in results)
    return results


def _trace(problem_id: str, completion: str, cfg: SearchConfig, tokens: int, finished: bool, **kw) -> Trace:
    return Trace(
        problem_id=problem_id,
        completion=completion,
        steps=cfg.step_rule.steps(completion),
        answer=extract_answer(completion),
        num_tokens=tokens,
        finished=finished,
        **kw,
    )


def beam_search(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """PRM-guided beam search, all problems at once.

    Iteration 0 samples N first steps; every iteration keeps the top N/M open candidates of each
    problem and expands each M times (N candidates again). Finished candidates are set aside;
    a problem stops once it has N finished beams, no open beam, or after max_iterations.
    """
    prm = require_prm("beam_search", prm)
    ex = Expander.for_problems(policy, prm, cfg, seed, problems)
    trees, costs = ex.trees, ex.costs
    keep = cfg.n // cfg.beam_width
    frontier: list[list[Node]] = [[] for _ in trees]
    done: list[list[Node]] = [[] for _ in trees]
    depth = [0] * len(trees)

    def advance(t: int, got: list[tuple[int, Node, list[Node]]]) -> Ask | None:
        """Problem t keeps its top N/M open candidates, until it has N finished, none open, or max_iterations."""
        kids = [k for _, _, ks in got for k in ks]
        depth[t] += 1
        for k in kids:
            if k.finished:
                k.status = "finished"
                done[t].append(k)
        open_kids = [k for k in kids if not k.finished]
        if cfg.filter_duplicates:
            open_kids = dedupe(open_kids)
        open_kids.sort(key=lambda k: k.score, reverse=True)
        for rank, k in enumerate(open_kids):
            k.status = "kept" if rank < keep else "pruned"
        frontier[t] = open_kids[:keep]
        if len(done[t]) >= cfg.n or not frontier[t] or depth[t] >= cfg.max_iterations:
            return None
        return [(t, k) for k in frontier[t]], cfg.beam_width

    if cfg.max_iterations > 0:
        grow(ex, {t: ([(t, trees[t].nodes[0])], cfg.n) for t in range(len(trees))}, advance)
    leaves = []
    for t in range(len(trees)):
        for node in frontier[t]:
            node.status = "unfinished"
        finished = sorted(done[t], key=lambda k: k.score, reverse=True)[: cfg.n]
        # Beams cut by max_iterations fill up to N, flagged unfinished: selection ignores them.
        leaves.append(finished + sorted(frontier[t], key=lambda k: k.score, reverse=True)[: cfg.n - len(finished)])
    if cfg.complete_leaves:
        complete(ex, leaves)
    return [
        SearchResult([leaf_trace(tree, k, cfg) for k in ks], costs[t], tree_dicts(tree))
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]


def dvts(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """Diverse verifier tree search: N/M independent subtrees per problem, each grown greedily.

    Each subtree expands its current node M times, scores the M children and moves to the best;
    it stops when that child is finished or after max_iterations. A subtree contributes its last
    M candidates (so N traces per problem); candidates that did not finish are flagged, never
    counted as answers (the reference mixes them in: search-and-learn issue #57), unless
    complete_leaves samples them on to their end.
    """
    prm = require_prm("dvts", prm)
    ex = Expander.for_problems(policy, prm, cfg, seed, problems)
    trees, costs = ex.trees, ex.costs
    subtrees = cfg.n // cfg.beam_width
    heads = [(t, trees[t].nodes[0]) for t in range(len(trees)) for _ in range(subtrees)]
    last: dict[int, list[Node]] = {}  # subtree index -> its last M candidates
    depth = [0] * len(heads)

    def advance(s: int, got: list[tuple[int, Node, list[Node]]]) -> Ask | None:
        """Subtree s moves to its best scored child, until that child is finished or max_iterations."""
        ((t, _, kids),) = got
        depth[s] += 1
        kids = dedupe(kids) if cfg.filter_duplicates else kids
        best = max(kids, key=lambda k: k.score)
        for k in kids:
            k.status = "finished" if k.finished else ("kept" if k is best else "pruned")
        last[s] = kids
        if best.finished or depth[s] >= cfg.max_iterations:
            return None
        heads[s] = (t, best)
        return [heads[s]], cfg.beam_width

    if cfg.max_iterations > 0:
        grow(ex, {s: ([heads[s]], cfg.beam_width) for s in range(len(heads))}, advance)
    leaves = []
    for t in range(len(trees)):
        leaves.append([])
        for s in range(t * subtrees, (t + 1) * subtrees):
            for k in last.get(s, []):
                if not k.finished:
                    k.status = "unfinished"
                leaves[t].append(k)
    if cfg.complete_leaves:
        complete(ex, leaves)
    return [
        SearchResult([leaf_trace(tree, k, cfg) for k in ks], costs[t], tree_dicts(tree))
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]


STRATEGIES = {
    "best_of_n": best_of_n,
    "beam_search": beam_search,
    "dvts": dvts,
    "particle_filtering": particle_filtering,
    "mcts": mcts,
}


def run_search(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    policy.new_search()
    if hasattr(prm, "new_search"):  # a PRM that keeps KV between calls (TokenClassificationPRM)
        prm.new_search()
    return STRATEGIES[cfg.strategy](policy, problems, cfg, seed, prm)
