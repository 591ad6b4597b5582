"""Monte-Carlo tree search over reasoning steps (as in rStar-Math and ReST-MCTS), batched across problems.

A problem's tree grows until it holds N finished leaves (as beam search stops at N finished beams) or for
max_iterations iterations; each iteration selects N/M leaves by PUCT (virtual visits keep one iteration's
selections apart), expands each with M sampled steps (one engine call for the leaves of every problem),
evaluates the new steps and backs their values up to the root. So MCTS expands at most as many nodes per
iteration as beam search and DVTS do at the same N, in as many engine calls, and no problem's tree waits
for another's. PUCT picks the child maximising Q + c_puct * P * sqrt(N_parent) / (1 + N_child), with P the
PRM's scores of the siblings normalised and Q the mean backed-up value (the PRM's score before any visit;
this iteration's earlier picks count as virtual losses).

A step's value is the PRM's score of its path, or with `mcts.rollout` (and a gold answer): the outcome of a
rollout from it to the end, verified against the gold answer (rStar-Math's Q-values; their tokens are
counted). Finished steps are terminal, and so are steps at depth max_iterations. The final candidates are
the N finished leaves of highest value, then the best open ones (flagged unfinished). Every node keeps its
visits and value (`Node.visits`, `Node.value`): what `synth label --method trees` turns into step labels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from synth.generate.engine import Policy, SamplingParams
from synth.generate.tree import Expander, Node, SearchResult, Tree, complete, leaf_trace, tree_dicts
from synth.prm.scorer import PRM
from synth.records import Problem
from synth.verify import extract_answer, verify_answers

if TYPE_CHECKING:
    from synth.generate.search import SearchConfig


def q_value(node: Node) -> float:
    return node.value if node.value is not None else (node.score if node.score is not None else 0.0)


def puct(parent_visits: int, child: Node, c_puct: float, virtual: int = 0) -> float:
    """Q + c_puct * P * sqrt(N_parent) / (1 + N_child). Each virtual visit (this iteration's earlier picks through
    the child) counts as a loss (value 0), so one iteration's selections spread over the tree."""
    prior = child.prior if child.prior is not None else 1.0
    weight = max(child.visits, 1)  # before any visit, the PRM's score counts as one
    q = q_value(child) * weight / (weight + virtual)
    return q + c_puct * prior * math.sqrt(parent_visits + 1) / (1 + child.visits + virtual)


def select(tree: Tree, c_puct: float, max_depth: int, virtual: dict[int, int], terminal: set[int]) -> Node | None:
    """The leaf to expand: descend from the root by PUCT (counting this iteration's virtual visits), past
    terminal subtrees; None when the whole tree is terminal."""
    node = tree.nodes[0]
    while True:
        if node.id in terminal:
            return None
        kids = [k for k in tree.kids(node) if k.id not in terminal]
        if not tree.children.get(node.id):
            if node.finished or node.depth >= max_depth:
                terminal.add(node.id)
                node = tree.nodes[0]
                continue
            return node
        if not kids:  # every child terminal: so is this node
            terminal.add(node.id)
            node = tree.nodes[0]
            continue
        visits = node.visits + virtual.get(node.id, 0)
        node = max(kids, key=lambda k: puct(visits, k, c_puct, virtual.get(k.id, 0)))


def backup(tree: Tree, node: Node, value: float, kind: str = "prm") -> None:
    """Add `value` to the running mean of every node from `node` up to the root."""
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value = value if cur.value is None else cur.value + (value - cur.value) / cur.visits
        cur.value_kind = kind
        cur = tree.nodes[cur.parent] if cur.parent is not None else None


def set_priors(kids: list[Node]) -> None:
    total = sum(max(k.score or 0.0, 0.0) for k in kids)
    for k in kids:
        k.prior = (max(k.score or 0.0, 0.0) / total) if total > 0 else 1.0 / len(kids)


def mcts(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """PUCT tree search, N/M leaves per problem per iteration, M steps per leaf, values backed up."""
    from synth.generate.search import require_prm

    prm = require_prm("mcts", prm)
    ex = Expander.for_problems(policy, prm, cfg, seed, problems)
    trees, costs = ex.trees, ex.costs
    per_iteration = max(1, cfg.n // cfg.beam_width)
    terminal: list[set[int]] = [set() for _ in trees]
    finished = [0] * len(trees)  # finished leaves per tree: a tree with N of them is done
    for _ in range(cfg.max_iterations):
        selected: list[tuple[int, Node]] = []
        for t, tree in enumerate(trees):
            if finished[t] >= cfg.n:
                continue
            virtual: dict[int, int] = {}
            for _ in range(per_iteration):
                leaf = select(tree, cfg.mcts.c_puct, cfg.max_iterations, virtual, terminal[t])
                if leaf is None:
                    break
                selected.append((t, leaf))
                cur: Node | None = leaf
                while cur is not None:
                    virtual[cur.id] = virtual.get(cur.id, 0) + 1
                    cur = tree.nodes[cur.parent] if cur.parent is not None else None
        if not selected:
            break
        children = ex.expand(selected, cfg.beam_width)
        flat = [(t, k) for (t, _), kids in zip(selected, children) for k in kids]
        ex.score(flat)
        values = _values(ex, flat, cfg) if cfg.mcts.rollout else [k.score for _, k in flat]
        for kids in children:
            set_priors(kids)
        for (t, k), v in zip(flat, values):
            k.status = "finished" if k.finished else "kept"
            finished[t] += k.finished
            backup(trees[t], k, v if v is not None else 0.0, "outcome" if cfg.mcts.rollout else "prm")
    leaves = [_final(tree, cfg.n) for tree in trees]
    if cfg.complete_leaves:
        complete(ex, leaves)
    return [
        SearchResult([leaf_trace(tree, k, cfg) for k in ks], costs[t], tree_dicts(tree))
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]


def _values(ex: Expander, flat: list[tuple[int, Node]], cfg: SearchConfig) -> list[float | None]:
    """rStar-Math's values: a rollout from each new unfinished step to the end, verified against the gold
    answer (finished steps: their own answer); the PRM's score where a problem has no gold answer."""
    graded = [i for i, (t, _) in enumerate(flat) if ex.trees[t].problem.answer]
    todo = [i for i in graded if not flat[i][1].finished]
    texts = {i: cfg.step_rule.completion(ex.trees[flat[i][0]].path(flat[i][1])) for i in graded}
    if todo:
        params = SamplingParams(
            n=1, max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=ex.seed + ex.calls
        )
        ex.calls += 1
        outs = ex.policy.generate([ex.trees[flat[i][0]].prefix(flat[i][1], cfg.step_rule) for i in todo], params)
        for i, cs in zip(todo, outs):
            ex.costs[flat[i][0]].add(cs)
            texts[i] = texts[i] + cs[0].text
    ok = verify_answers([extract_answer(texts[i]) for i in graded], [ex.trees[flat[i][0]].problem for i in graded])
    values: list[float | None] = [k.score for _, k in flat]
    for i, v in zip(graded, ok):
        values[i] = 1.0 if v else 0.0
    return values


def _final(tree: Tree, n: int) -> list[Node]:
    """The N finished leaves of highest value, then the best open leaves (flagged unfinished)."""
    leaves = [k for k in tree.nodes[1:] if not tree.children.get(k.id)]
    finished = sorted((k for k in leaves if k.finished), key=q_value, reverse=True)[:n]
    rest = sorted((k for k in leaves if not k.finished), key=q_value, reverse=True)[: n - len(finished)]
    for k in rest:
        k.status = "unfinished"
    return finished + rest
