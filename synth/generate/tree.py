"""The search tree every tree strategy grows: nodes (one step each, parent links, PRM scores, status), the
cost of a search, and the `Expander` that grows trees one step at a time, batched across every tree and
node asked for, and scores nodes with the PRM.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from synth.generate.engine import Continuation, Policy, SamplingParams
from synth.prm.scorer import PRM, aggregate
from synth.records import Problem, Trace
from synth.steps import StepRule
from synth.verify import extract_answer

if TYPE_CHECKING:
    from synth.generate.search import SearchConfig


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
    # open -> kept | pruned | finished | unfinished (cut by max_iterations); rollout: complete_leaves
    status: str = "open"
    lead: str = ""  # whitespace the model wrote before the step (sentence steps; see synth/steps.py)
    copies: int = 0  # particle filtering: how many particles took this node when they were resampled
    visits: int = 0  # MCTS: simulations through this node
    value: float | None = None  # MCTS: mean value backed up through this node (a Q-value)
    value_kind: str | None = None  # MCTS: "outcome" (verified rollouts) or "prm" (the PRM's scores)
    prior: float | None = None  # MCTS: the PRM score among its siblings, normalised (the PUCT prior)


@dataclass
class Tree:
    problem: Problem
    prompt: str
    nodes: list[Node] = field(default_factory=list)

    children: dict[int, list[int]] = field(default_factory=dict)  # node id -> its children's ids

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
        return self.attach(node)

    def attach(self, node: Node) -> Node:
        self.nodes.append(node)
        self.children.setdefault(node.parent, []).append(node.id)
        return node

    def kids(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in self.children.get(node.id, [])]

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


class Expander:
    """Grows trees one step at a time, batched across every (tree, node) asked for, and scores nodes."""

    def __init__(self, policy: Policy, prm: PRM, cfg: SearchConfig, seed: int, trees: list[Tree], costs: list[Cost]):
        self.policy, self.prm, self.cfg, self.seed = policy, prm, cfg, seed
        self.trees, self.costs, self.calls = trees, costs, 0
        self.rule = cfg.step_rule

    @classmethod
    def for_problems(cls, policy: Policy, prm: PRM, cfg: SearchConfig, seed: int, problems: list[Problem]) -> Expander:
        """An expander over one fresh tree (rooted at the chat prompt) and one cost counter per problem."""
        trees = [Tree(p, policy.chat_prompt(p.problem)) for p in problems]
        return cls(policy, prm, cfg, seed, trees, [Cost() for _ in problems])

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
            tail_rows=self.cfg.tail_rows,
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
                tree.attach(cur)
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


Ask = tuple[list[tuple[int, Node]], int]  # a lane's next expansion: its (tree, node)s, children per node
Advance = Callable[[Hashable, list[tuple[int, Node, list[Node]]]], Ask | None]


def grow(ex: Expander, first: dict[Hashable, Ask], advance: Advance) -> None:
    """Grow lanes (a DVTS subtree, a problem's beams or particles) in whole iterations: every lane's nodes
    expanded in one engine call (per children count), every child scored in one PRM call, then
    `advance(lane, [(tree, node, children)])` names each lane's next ask (None: the lane ends)."""
    asks = first
    while asks:
        got: dict[Hashable, list[tuple[int, Node, list[Node]]]] = {}
        for n in dict.fromkeys(n for _, n in asks.values()):
            flat = [(lane, t, node) for lane, (nodes, m) in asks.items() if m == n for t, node in nodes]
            for (lane, t, node), kids in zip(flat, ex.expand([(t, node) for _, t, node in flat], n)):
                got.setdefault(lane, []).append((t, node, kids))
        ex.score([(t, k) for lane in asks for t, _, kids in got[lane] for k in kids])
        asks = {lane: ask for lane in asks if (ask := advance(lane, got[lane])) is not None}


def leaf_trace(tree: Tree, node: Node, cfg: SearchConfig) -> Trace:
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


def dedupe(nodes: list[Node]) -> list[Node]:
    seen, out = set(), []
    for n in nodes:
        if n.step not in seen:
            seen.add(n.step)
            out.append(n)
        else:
            n.status = "pruned"
    return out


def complete(ex: Expander, leaves: list[list[Node]]) -> None:
    """Replace every unfinished leaf (per tree) by its sampled completion, one batch for all trees."""
    todo = [(t, i) for t, ks in enumerate(leaves) for i, k in enumerate(ks) if not k.finished]
    for (t, i), leaf in zip(todo, ex.complete([(t, leaves[t][i]) for t, i in todo])):
        leaves[t][i] = leaf


def tree_dicts(tree: Tree) -> list[dict]:
    """A tree as rows store it: every node's fields."""
    return [asdict(n) for n in tree.nodes]
