"""Particle filtering and MCTS on deterministic fakes: resampling, lineage, PUCT, backup, budget, finishing."""

from __future__ import annotations

import random
import statistics

import pytest
from fakes import FakeEngine, StepPolicy, StepPRM

from synth.generate.engine import Continuation
from synth.generate.mcts import backup, puct, select
from synth.generate.particles import resample, weights
from synth.generate.search import MCTSConfig, ParticleConfig, SearchConfig, run_search
from synth.generate.tree import Node, Tree
from synth.records import Problem


class CountingPolicy(FakeEngine):
    """Every sample is a new step `c<k>` (k counts up over the whole search); at depth `finish_depth` it ends
    with a boxed answer: right (7) when k is even."""

    def __init__(self, finish_depth: int = 3):
        self.finish_depth, self.k, self.calls = finish_depth, 0, 0

    def chat_prompt(self, problem):
        return f"Q: {problem}\nA: "

    def generate(self, prompts, params):
        self.calls += 1
        out = []
        for p in prompts:
            depth, samples = p.count("\n\n"), []
            for _ in range(params.n):
                self.k += 1
                if not params.stop or depth + 1 >= self.finish_depth:
                    samples.append(Continuation(f"c{self.k} so \\boxed{{{7 if self.k % 2 == 0 else 9}}}", 3, "eos"))
                else:
                    samples.append(Continuation(f"c{self.k}", 2, "stop"))
            out.append(samples)
        return out


class OddIsZeroPRM:
    """A step `c<k>` scores 0 when k is odd, 0.9 when even."""

    def score(self, problems, steps):
        return [[0.0 if int(s.split()[0][1:]) % 2 else 0.9 for s in path] for path in steps]


PROBLEMS = [Problem("a", "What is 3 + 4?", "7", "t"), Problem("b", "What is 5 + 2?", "7", "t")]


# ---------------------------------------------------------------- particle filtering


def test_resampling_proportions():
    w = weights([0.0, 0.5, 0.5, 0.5])
    assert w[0] == 0.0 and w[1:] == pytest.approx([1 / 3] * 3)
    for method in ("systematic", "multinomial"):
        picks = [i for seed in range(300) for i in resample(w, 4, random.Random(seed), method)]
        assert 0 not in picks  # a particle of weight 0 never survives
    equal = [0.25] * 4
    assert all(sorted(resample(equal, 4, random.Random(s))) == [0, 1, 2, 3] for s in range(50))  # systematic: all kept
    counts = [resample(equal, 4, random.Random(s), "multinomial").count(2) for s in range(2000)]
    assert statistics.mean(counts) == pytest.approx(1.0, abs=0.08)  # in expectation
    hot, cold = weights([0.9, 0.6], temperature=1.0), weights([0.9, 0.6], temperature=100.0)
    assert hot[0] / hot[1] == pytest.approx((0.9 / 0.1) / (0.6 / 0.4)) and cold[0] == pytest.approx(0.5, abs=0.01)
    assert weights([0.0, 0.0]) == [0.5, 0.5]


def test_particle_lineage_and_finishing():
    cfg = SearchConfig(
        strategy="particle_filtering", n=4, max_iterations=5, particles=ParticleConfig(resampling="systematic")
    )
    results = run_search(CountingPolicy(finish_depth=3), PROBLEMS, cfg, 0, OddIsZeroPRM())
    for res in results:
        nodes = {n["id"]: n for n in res.tree}
        assert len(res.traces) == 4 and all(t.finished for t in res.traces)
        for n in nodes.values():
            odd = n["step"] and int(n["step"].split()[0][1:]) % 2
            if odd and not n["finished"]:
                assert n["copies"] == 0 and n["status"] == "pruned"  # weight 0: never resampled
        for t in res.traces:  # every step of a final particle was resampled into the population
            node = nodes[t.tree["node"]]
            while node["parent"] is not None and node["parent"] != 0:
                node = nodes[node["parent"]]
                assert node["copies"] >= 1 and node["status"] == "kept"


def test_particles_cut_by_max_iterations_are_flagged():
    cfg = SearchConfig(strategy="particle_filtering", n=4, max_iterations=2)
    res = run_search(StepPolicy(finish_depth=5), PROBLEMS[:1], cfg, 0, StepPRM())[0]
    assert len(res.traces) == 4 and not any(t.finished for t in res.traces)


# ---------------------------------------------------------------- MCTS


def hand_tree():
    tree = Tree(Problem("a", "q", "7", "t"), "Q: ")
    for step, score in (("x", 0.2), ("y", 0.8)):
        tree.attach(Node(len(tree.nodes), 0, step, 1, score=score))
    tree.nodes[1].prior, tree.nodes[2].prior = 0.2, 0.8
    return tree


def test_puct_selection_order():
    tree = hand_tree()
    x, y = tree.nodes[1], tree.nodes[2]
    assert select(tree, 1.0, 8, {}, set()) is y  # unvisited: the PRM's score and prior decide
    backup(tree, y, 0.0)  # y's subtree turned out wrong
    backup(tree, y, 0.0)
    assert puct(tree.nodes[0].visits, x, 1.0) > puct(tree.nodes[0].visits, y, 1.0)
    assert select(tree, 1.0, 8, {}, set()) is x
    assert select(tree, 0.0, 8, {}, set()) is x  # no exploration: Q alone (0.2 > 0.0)
    # virtual visits of this iteration's earlier picks push the next pick elsewhere
    tree2 = hand_tree()
    assert select(tree2, 1.0, 8, {0: 1, 2: 5}, set()) is tree2.nodes[1]


def test_value_backup_is_a_running_mean_to_the_root():
    tree = hand_tree()
    deep = tree.attach(Node(3, 2, "z", 2, score=0.5))
    backup(tree, deep, 1.0)
    backup(tree, tree.nodes[2], 0.0)
    assert (deep.visits, deep.value) == (1, 1.0)
    assert (tree.nodes[2].visits, tree.nodes[2].value) == (2, 0.5)
    assert (tree.nodes[0].visits, tree.nodes[0].value) == (2, 0.5) and tree.nodes[1].visits == 0


def test_terminal_subtrees_are_skipped():
    tree = hand_tree()
    tree.nodes[2].finished = True
    terminal: set[int] = set()
    assert select(tree, 1.0, 8, {}, terminal) is tree.nodes[1] and 2 in terminal
    tree.nodes[1].depth = 8  # at the depth limit: terminal too
    assert select(tree, 1.0, 8, {}, terminal) is None and 0 in terminal


def test_mcts_budget_matches_beam_search_and_final_leaves():
    policy = CountingPolicy(finish_depth=4)
    cfg = SearchConfig(strategy="mcts", n=4, beam_width=2, max_iterations=3)
    results = run_search(policy, PROBLEMS, cfg, 0, OddIsZeroPRM())
    assert policy.calls == 3  # one engine call per iteration, for both problems
    for res in results:
        assert len(res.tree) == 1 + 3 * (4 // 2) * 2  # N/M leaves x M steps per iteration
        assert len(res.traces) == 4 and res.cost.generated_tokens > 0
        assert res.tree[0]["visits"] == 12 and all(n["value"] is not None for n in res.tree)
        finished = [t for t in res.traces if t.finished]
        assert [t.finished for t in res.traces] == sorted((t.finished for t in res.traces), reverse=True)
        assert all(t.score is not None for t in finished)


def test_mcts_stops_a_tree_once_it_holds_n_finished_leaves():
    policy = CountingPolicy(finish_depth=2)
    cfg = SearchConfig(strategy="mcts", n=4, beam_width=2, max_iterations=8)
    results = run_search(policy, PROBLEMS, cfg, 0, OddIsZeroPRM())
    assert policy.calls == 2  # both trees hold 4 finished leaves after iteration 2: no third call
    for res in results:
        assert all(t.finished for t in res.traces) and len(res.traces) == 4
        assert sum(n["status"] == "finished" for n in res.tree) < 4 + 4  # no iteration after the N-th finish


def test_mcts_rollouts_value_steps_by_verified_outcomes():
    policy = CountingPolicy(finish_depth=5)
    cfg = SearchConfig(strategy="mcts", n=2, beam_width=2, max_iterations=2, mcts=MCTSConfig(rollout=True))
    res = run_search(policy, PROBLEMS[:1], cfg, 0, OddIsZeroPRM())[0]
    new = [n for n in res.tree if n["depth"] >= 1]
    assert new and all(
        n["value"] in (0.0, 1.0)
        for n in new
        if n["visits"] == 1 and not [c for c in res.tree if c["parent"] == n["id"]]
    )
    assert res.cost.generated_tokens > sum(n["tokens"] for n in res.tree)  # the rollouts' tokens are counted


def test_new_strategies_need_a_prm_and_check_their_settings():
    from synth.generate.search import PRMRequired

    with pytest.raises(PRMRequired, match="mcts needs a PRM"):
        run_search(StepPolicy(), PROBLEMS, SearchConfig(strategy="mcts", n=4, beam_width=2), 0, None)
    with pytest.raises(ValueError, match="multiple of beam_width"):
        SearchConfig(strategy="mcts", n=5, beam_width=2)
    with pytest.raises(ValueError, match="temperature must be"):
        ParticleConfig(temperature=0)
    SearchConfig(strategy="particle_filtering", n=5)  # no beam width to divide by


# ---------------------------------------------------------------- trees as labels


def tree_row():
    """root -> a -> {b (right leaf), c -> {d (right), e (wrong)}}, plus f (wrong leaf under the root)."""
    import json

    nodes = [(0, None, ""), (1, 0, "a"), (2, 1, "b"), (3, 1, "c"), (4, 3, "d"), (5, 3, "e"), (6, 0, "f")]
    tree = [{"id": i, "parent": p, "step": s, "visits": 0, "value": None} for i, p, s in nodes]
    return {
        "id": "p",
        "problem": "q?",
        "model": "m",
        "tree": json.dumps(tree),
        "leaves": [2, 4, 5, 6],
        "finished": [True, True, True, True],
        "verified": [True, True, False, False],
    }


def test_tree_labels_on_a_hand_made_tree():
    from synth.prm.tree_labels import tree_label_rows

    rows = {r["id"]: r for r in tree_label_rows([tree_row()], min_support=2)}
    assert rows["p#0"]["completions"] == ["a", "b"] and rows["p#0"]["soft_labels"] == [2 / 3, 1.0]
    assert rows["p#0"]["support"] == [3, 1] and rows["p#0"]["labels"] == [True, True]
    assert rows["p#1"]["soft_labels"] == [2 / 3, 1 / 2, 1.0] and rows["p#1"]["support"] == [3, 2, 1]
    assert rows["p#2"]["soft_labels"] == [2 / 3, 1 / 2, 0.0] and rows["p#2"]["labels"] == [True, True, False]
    assert rows["p#3"]["completions"] == ["f"] and rows["p#3"]["soft_labels"] == [0.0]
    strict = {r["id"]: r for r in tree_label_rows([tree_row()], min_support=3)}
    assert strict["p#1"]["completions"] == ["a"]  # c rests on 2 leaves only: the row stops before it
    # MCTS with verified rollouts: a visited node's Q-value is its label
    import json

    row = tree_row()
    tree = json.loads(row["tree"])
    tree[1].update(visits=5, value=0.4, value_kind="outcome")
    tree[3].update(visits=4, value=0.9, value_kind="prm")  # PRM-valued: no label, the leaves decide
    row["tree"] = json.dumps(tree)
    mcts_rows = {r["id"]: r for r in tree_label_rows([row])}
    assert mcts_rows["p#1"]["soft_labels"] == [0.4, 1 / 2, 1.0] and mcts_rows["p#1"]["support"] == [5, 2, 1]


def test_label_from_trees_of_a_search_run(tmp_path):
    from fakes import StepPolicy, StepPRM

    from synth.generate.run import GenerateConfig, generate
    from synth.prm.label import LabelConfig, label
    from synth.problems import PoolConfig

    pool = PoolConfig(num_problems=4, seed=3)
    cfg = GenerateConfig(
        output_dir=str(tmp_path / "gen"),
        pool=pool,
        prm="fake",
        problems_per_batch=4,
        search=SearchConfig(strategy="dvts", n=4, beam_width=2, max_iterations=4),
    )
    generate(cfg, policy=StepPolicy(finish_depth=3, correct=(0,)), prm=StepPRM())
    stats = label(
        LabelConfig(
            dataset=str(tmp_path / "gen"),
            method="trees",
            min_support=1,
            rollouts=4,
            output_dir=str(tmp_path / "labels"),
        )
    )
    assert stats["traces"] > 0 and stats["rollouts_used"] == 0
    assert stats["rollouts_saved"] == 4 * stats["tree_labelled_steps"] > 0
