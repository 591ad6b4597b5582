"""Particle filtering (Puri et al. 2025, arXiv 2502.01618): the PRM's judgement as a likelihood.

N particles per problem start at the root. Each iteration extends every open particle by one step (one
engine call for every particle of every problem), scores the new steps with the PRM (one call), and
resamples the open particles in proportion to their weights: a particle whose step the PRM finds likely
to lead to a right answer is copied, an unlikely one dies out. A weight is the PRM's odds p / (1 - p)
raised to 1 / temperature (temperature 1: its_hub's softmax over the PRM's logits; higher: closer to
uniform), so a step the PRM scores 0 never survives. Particles that finish leave the population and are
kept; the population of the others shrinks by as many, so a problem ends with N candidates: its finished
particles and, after max_iterations, the open ones (flagged unfinished). Each node records how many
particles took it (`copies`), so the tree shows which particle descended from which.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from synth.generate.engine import Policy
from synth.generate.tree import Ask, Expander, Node, SearchResult, complete, grow, leaf_trace, tree_dicts
from synth.prm.scorer import PRM
from synth.records import Problem

if TYPE_CHECKING:
    from synth.generate.search import SearchConfig


def weights(scores: list[float], temperature: float = 1.0) -> list[float]:
    """Resampling weights, normalised: the PRM's odds to the power 1 / temperature (uniform if all are 0)."""
    odds = [
        0.0 if s <= 0 else math.exp((math.log(min(s, 1 - 1e-7)) - math.log1p(-min(s, 1 - 1e-7))) / temperature)
        for s in scores
    ]
    total = sum(odds)
    return [o / total for o in odds] if total > 0 else [1 / len(scores)] * len(scores)


def resample(w: list[float], k: int, rng: random.Random, method: str = "systematic") -> list[int]:
    """k indices drawn in proportion to the normalised weights `w`: systematic (one uniform offset, k evenly
    spaced points: lower variance, each index kept floor(k w) or ceil(k w) times) or multinomial."""
    if method == "multinomial":
        return rng.choices(range(len(w)), weights=w, k=k)
    u, out, cum, i = rng.random() / k, [], w[0], 0
    for j in range(k):
        point = u + j / k
        while point > cum and i < len(w) - 1:
            i += 1
            cum += w[i]
        out.append(i)
    return out


def particle_filtering(
    policy: Policy, problems: list[Problem], cfg: SearchConfig, seed: int, prm: PRM | None = None
) -> list[SearchResult]:
    """N particles per problem, extended one step at a time, resampled by the PRM's weights."""
    from synth.generate.search import require_prm

    prm = require_prm("particle_filtering", prm)
    ex = Expander.for_problems(policy, prm, cfg, seed, problems)
    trees, costs = ex.trees, ex.costs
    rng = random.Random(seed)  # drawn from in problem order (grow advances lanes in order)
    particles: list[list[Node]] = [[] for _ in trees]
    done: list[list[Node]] = [[] for _ in trees]
    depth = [0] * len(trees)

    def advance(t: int, got: list[tuple[int, Node, list[Node]]]) -> Ask | None:
        """Problem t's finished particles leave; the open ones are resampled by the PRM's weights."""
        depth[t] += 1
        open_kids = []
        for _, _, (k,) in got:
            if k.finished:
                k.status = "finished"
                done[t].append(k)
            else:
                k.status = "pruned"
                open_kids.append(k)
        particles[t] = []
        if not open_kids:
            return None
        picked = resample(
            weights([k.score for k in open_kids], cfg.particles.temperature),
            len(open_kids),
            rng,
            cfg.particles.resampling,
        )
        for i in picked:
            open_kids[i].copies += 1
            open_kids[i].status = "kept"
        particles[t] = [open_kids[i] for i in picked]
        return ([(t, k) for k in particles[t]], 1) if depth[t] < cfg.max_iterations else None

    if cfg.max_iterations > 0:
        grow(ex, {t: ([(t, trees[t].nodes[0])] * cfg.n, 1) for t in range(len(trees))}, advance)
    leaves = []
    for t in range(len(trees)):
        for node in particles[t]:
            node.status = "unfinished"
        leaves.append(done[t] + particles[t])
    if cfg.complete_leaves:
        complete(ex, leaves)
    return [
        SearchResult([leaf_trace(tree, k, cfg) for k in ks], costs[t], tree_dicts(tree))
        for t, (tree, ks) in enumerate(zip(trees, leaves))
    ]
