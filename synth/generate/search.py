"""Search strategies behind one interface: best-of-N, beam search and DVTS.

Every strategy returns, per problem, a `SearchResult`: its final traces (finished or not, flagged),
the tree it grew (every node, with parent links, scores and whether it was kept or pruned) and its
cost (tokens generated, tokens prefilled, steps scored by the PRM). All strategies batch across the
problems they are given: one engine call per search iteration, not per problem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from synth.config import check_fields
from synth.generate.engine import Continuation, Policy, SamplingParams
from synth.prm.scorer import PRM, Aggregation, aggregate
from synth.records import Problem, Trace
from synth.steps import StepCut, StepRule
from synth.verify import extract_answer

Strategy = Literal["best_of_n", "beam_search", "dvts"]


NEEDS_PRM = ("beam_search", "dvts")  # strategies that rank steps with a PRM


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
        if self.strategy in NEEDS_PRM and self.n % self.beam_width:
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
        return path + (self.max_tokens if self.complete_leaves else 0)


@dataclass
class Node:
    """One step in a search tree. The root (id 0) holds no step."""

    id: int
    parent: int | None
    step: str
    depth: int
    tokens: int = 0
    finished: bool = False  # the model ended (EOS) or boxed an answer after this step
    score: float | None = None  # ranking score (aggregated PRM scores of the path, lookahead included)
    step_scores: list[float] | None = None  # PRM score of every step of the path
    status: str = (
        "open"  # open -> kept | pruned | finished | unfinished (cut by max_iterations); rollout: complete_leaves
    )
    lead: str = ""  # whitespace the model wrote before the step (sentence steps; see synth/steps.py)


@dataclass
class Tree:
    problem: Problem
    prompt: str
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self):
        if not self.nodes:
            self.nodes.append(Node(0, None, "", 0, status="kept"))

    def add(self, parent: Node, c: Continuation, rule: StepRule) -> Node:
        lead, step = rule.generated(c.text)
        node = Node(
            len(self.nodes),
            parent.id,
            step,
            parent.depth + 1,
            c.num_tokens,
            lead=lead,
            finished=c.stop_reason == "eos" or "\\boxed" in step,
        )
        self.nodes.append(node)
        return node

    def path(self, node: Node) -> list[tuple[str, str]]:
        """(lead, step) of every non-empty step from the root to node."""
        out = []
        while node.parent is not None:
            if node.step:
                out.append((node.lead, node.step))
            node = self.nodes[node.parent]
        return out[::-1]

    def prefix(self, node: Node, rule: StepRule) -> str:
        return self.prompt + rule.prefix(self.path(node))


@dataclass
class Cost:
    generated_tokens: int = 0
    prefill_tokens: int = 0  # prompt tokens behind every sample (a prompt with n samples counts n times)
    cached_tokens: int = 0  # of those, tokens whose KV the engine reused from an earlier call
    prm_steps: int = 0  # steps scored by the PRM
    engine_calls: int = 0

    def add(self, continuations: list[Continuation]) -> None:
        """Count the tokens of an engine call's continuations."""
        self.generated_tokens += sum(c.num_tokens for c in continuations)
        self.prefill_tokens += sum(c.prompt_tokens for c in continuations)
        self.cached_tokens += sum(c.cached_tokens for c in continuations)


@dataclass
class SearchResult:
    traces: list[Trace]
    cost: Cost
    tree: list[dict] | None = None  # nodes of the search tree (beam search, DVTS)


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


class _Expander:
    """Grows trees one step at a time, batched across every (tree, node) asked for, and scores nodes."""

    def __init__(self, policy: Policy, prm: PRM, cfg: SearchConfig, seed: int, trees: list[Tree], costs: list[Cost]):
        self.policy, self.prm, self.cfg, self.seed = policy, prm, cfg, seed
        self.trees, self.costs, self.calls = trees, costs, 0
        self.rule = cfg.step_rule

    def _generate(self, requests: list[tuple[int, Node]], n: int, temperature: float) -> list[list[Continuation]]:
        if not requests:
            return []
        params = SamplingParams(
            n=n,
            max_tokens=self.cfg.step_max_tokens,
            temperature=temperature,
            top_p=self.cfg.top_p,
            stop=self.rule.stops,
            include_stop=self.rule.include_stop,
            seed=self.seed + self.calls,
            keep_cache=True,
        )
        self.calls += 1
        outs = self.policy.generate([self.trees[t].prefix(node, self.rule) for t, node in requests], params)
        for (t, _), cs in zip(requests, outs):
            self.costs[t].add(cs)
            self.costs[t].engine_calls += 1
        return outs

    def expand(self, requests: list[tuple[int, Node]], n: int) -> list[list[Node]]:
        """n sampled children for each (tree index, node)."""
        outs = self._generate(requests, n, self.cfg.temperature)
        return [[self.trees[t].add(node, c, self.rule) for c in cs] for (t, node), cs in zip(requests, outs)]

    def score(self, items: list[tuple[int, Node]]) -> None:
        """Set node.score (with lookahead) and node.step_scores, one PRM batch for all."""
        pairs = [self.trees[t].path(node) for t, node in items]
        paths = [[step for _, step in p] for p in pairs]
        live = [i for i, (_, node) in enumerate(items) if not node.finished]
        for _ in range(self.cfg.lookahead):  # greedy rollouts, scored but never kept
            if not live:
                break
            outs = self._generate_virtual([(items[i][0], pairs[i]) for i in live])
            still = []
            for i, c in zip(live, outs):
                lead, step = self.rule.generated(c.text)
                if step:
                    pairs[i] = pairs[i] + [(lead, step)]
                if c.stop_reason != "eos" and "\\boxed" not in c.text:
                    still.append(i)
            live = still
        scored_paths = [[step for _, step in p] for p in pairs]
        need_plain = self.cfg.lookahead > 0
        batch = scored_paths + (paths if need_plain else [])
        problems = [self.trees[t].problem.problem for t, _ in items] * (2 if need_plain else 1)
        scores = self.prm.score(problems, [p or [""] for p in batch])
        for k, (t, node) in enumerate(items):
            node.score = aggregate(scores[k], self.cfg.aggregation)
            node.step_scores = scores[len(items) + k] if need_plain else scores[k]
            self.costs[t].prm_steps += len(batch[k]) + (len(paths[k]) if need_plain else 0)

    def complete(self, items: list[tuple[int, Node]]) -> list[Node]:
        """Sample each node's path on to its end in one engine call (no step stop), add the rest of the
        text as a chain of `rollout` nodes, score the new leaves and return them (in order)."""
        if not items:
            return []
        params = SamplingParams(
            n=1,
            max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            seed=self.seed + self.calls,
        )
        self.calls += 1
        outs = self.policy.generate([self.trees[t].prefix(node, self.rule) for t, node in items], params)
        leaves = []
        for (t, node), cs in zip(items, outs):
            self.costs[t].add(cs)
            self.costs[t].engine_calls += 1
            c, tree, cur = cs[0], self.trees[t], node
            for j, (lead, step) in enumerate(self.rule.cut_text(c.text) or [("", "")]):
                cur = Node(
                    len(tree.nodes),
                    cur.id,
                    step,
                    cur.depth + 1,
                    c.num_tokens if j == 0 else 0,
                    lead=lead,
                    status="rollout",
                )
                tree.nodes.append(cur)
            cur.finished = c.stop_reason == "eos" or "\\boxed" in c.text
            cur.status = "finished" if cur.finished else "unfinished"
            leaves.append((t, cur))
        self.score(leaves)
        return [leaf for _, leaf in leaves]

    def _generate_virtual(self, reqs: list[tuple[int, list[tuple[str, str]]]]) -> list[Continuation]:
        """One greedy step after each (tree index, path): lookahead steps are scored, never kept."""
        params = SamplingParams(
            n=1,
            max_tokens=self.cfg.step_max_tokens,
            temperature=0.0,
            stop=self.rule.stops,
            include_stop=self.rule.include_stop,
            seed=self.seed,
        )
        outs = self.policy.generate([self.trees[t].prompt + self.rule.prefix(path) for t, path in reqs], params)
        for (t, _), cs in zip(reqs, outs):
            self.costs[t].add(cs)
        return [cs[0] for cs in outs]


def _leaf_trace(tree: Tree, node: Node, cfg: SearchConfig) -> Trace:
    pairs = tree.path(node)
    steps = [step for _, step in pairs]
    path_tokens, cur = 0, node
    while cur.parent is not None:
        path_tokens += cur.tokens
        cur = tree.nodes[cur.parent]
    completion = cfg.step_rule.completion(pairs)
    return Trace(
        problem_id=tree.problem.id,
        completion=completion,
        steps=steps,
        answer=extract_answer(completion),
        num_tokens=path_tokens,
        finished=node.finished,
        step_scores=node.step_scores,
        score=node.score,
        tree={"node": node.id},
    )


def _dedupe(nodes: list[Node]) -> list[Node]:
    seen, out = set(), []
    for n in nodes:
        if n.step not in seen:
            seen.add(n.step)
            out.append(n)
        else:
            n.status = "pruned"
    return out


def beam_search(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """PRM-guided beam search, all problems at once.

    Iteration 0 samples N first steps; every iteration keeps the top N/M open candidates of each
    problem and expands each M times (N candidates again). Finished candidates are set aside;
    a problem stops once it has N finished beams, no open beam, or after max_iterations.
    """
    prm = require_prm("beam_search", prm)
    trees = [Tree(p, policy.chat_prompt(p.problem)) for p in problems]
    costs = [Cost() for _ in problems]
    ex = _Expander(policy, prm, cfg, seed, trees, costs)
    keep = cfg.n // cfg.beam_width
    frontier: list[list[Node]] = [[t.nodes[0]] for t in trees]
    done: list[list[Node]] = [[] for _ in trees]
    for it in range(cfg.max_iterations):
        requests = [(t, node) for t, nodes in enumerate(frontier) for node in nodes if len(done[t]) < cfg.n]
        if not requests:
            break
        children = ex.expand(requests, cfg.n if it == 0 else cfg.beam_width)
        by_tree: dict[int, list[Node]] = {}
        for (t, _), kids in zip(requests, children):
            by_tree.setdefault(t, []).extend(kids)
        ex.score([(t, k) for t, kids in by_tree.items() for k in kids])
        frontier = [[] for _ in trees]
        for t, kids in by_tree.items():
            for k in kids:
                if k.finished:
                    k.status = "finished"
                    done[t].append(k)
            open_kids = [k for k in kids if not k.finished]
            if cfg.filter_duplicates:
                open_kids = _dedupe(open_kids)
            open_kids.sort(key=lambda k: k.score, reverse=True)
            for rank, k in enumerate(open_kids):
                k.status = "kept" if rank < keep else "pruned"
            frontier[t] = open_kids[:keep]
    leaves = []
    for t in range(len(trees)):
        for node in frontier[t]:
            node.status = "unfinished"
        finished = sorted(done[t], key=lambda k: k.score, reverse=True)[: cfg.n]
        # Beams cut by max_iterations fill up to N, flagged unfinished: selection ignores them.
        leaves.append(finished + sorted(frontier[t], key=lambda k: k.score, reverse=True)[: cfg.n - len(finished)])
    if cfg.complete_leaves:
        _complete(ex, leaves)
    return [
        SearchResult([_leaf_trace(tree, k, cfg) for k in ks], costs[t], [asdict(n) for n in tree.nodes])
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]


def _complete(ex: _Expander, leaves: list[list[Node]]) -> None:
    """Replace every unfinished leaf (per tree) by its sampled completion, one batch for all trees."""
    todo = [(t, i) for t, ks in enumerate(leaves) for i, k in enumerate(ks) if not k.finished]
    for (t, i), leaf in zip(todo, ex.complete([(t, leaves[t][i]) for t, i in todo])):
        leaves[t][i] = leaf


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
    trees = [Tree(p, policy.chat_prompt(p.problem)) for p in problems]
    costs = [Cost() for _ in problems]
    ex = _Expander(policy, prm, cfg, seed, trees, costs)
    subtrees = cfg.n // cfg.beam_width
    heads = [(t, trees[t].nodes[0]) for t in range(len(trees)) for _ in range(subtrees)]
    last: dict[int, list[Node]] = {}  # subtree index -> its last M candidates
    active = list(range(len(heads)))
    for _ in range(cfg.max_iterations):
        if not active:
            break
        children = ex.expand([heads[s] for s in active], cfg.beam_width)
        ex.score([(heads[s][0], k) for s, kids in zip(active, children) for k in kids])
        still = []
        for s, kids in zip(active, children):
            kids = _dedupe(kids) if cfg.filter_duplicates else kids
            best = max(kids, key=lambda k: k.score)
            for k in kids:
                k.status = "finished" if k.finished else ("kept" if k is best else "pruned")
            last[s] = kids
            if not best.finished:
                heads[s] = (heads[s][0], best)
                still.append(s)
        active = still
    leaves = []
    for t in range(len(trees)):
        leaves.append([])
        for s in range(t * subtrees, (t + 1) * subtrees):
            for k in last.get(s, []):
                if not k.finished:
                    k.status = "unfinished"
                leaves[t].append(k)
    if cfg.complete_leaves:
        _complete(ex, leaves)
    return [
        SearchResult([_leaf_trace(tree, k, cfg) for k in ks], costs[t], [asdict(n) for n in tree.nodes])
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]


STRATEGIES = {"best_of_n": best_of_n, "beam_search": beam_search, "dvts": dvts}


def run_search(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    policy.new_search()
    return STRATEGIES[cfg.strategy](policy, problems, cfg, seed, prm)
