import pytest
from fakes import FakeEngine, StepPolicy, StepPRM

from synth.evaluate import select_answers
from synth.generate.engine import Continuation
from synth.generate.search import SearchConfig, beam_search, best_of_n, dvts
from synth.records import Problem, Trace

PROBLEMS = [Problem("p0", "2+5?", "7", "test"), Problem("p1", "3+4?", "7", "test")]


def nodes(result):
    return {n["id"]: n for n in result.tree}


def test_beam_search_keeps_top_n_over_m_and_batches_problems():
    policy, prm = StepPolicy(finish_depth=3), StepPRM()
    cfg = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=5)
    results = beam_search(policy, PROBLEMS, cfg, seed=0, prm=prm)
    # one engine call per iteration for both problems: roots (n=4), then 2 kept beams x M=2
    assert policy.calls == [(2, 4), (4, 2), (4, 2)]
    for r in results:
        assert len(r.traces) == 4 and all(t.finished for t in r.traces)
        tree = nodes(r)
        first = [n for n in tree.values() if n["depth"] == 1]
        assert sorted(n["status"] for n in first) == ["kept", "kept", "pruned", "pruned"]
        assert {n["step"] for n in first if n["status"] == "kept"} == {"d0s0", "d0s1"}  # best two by PRM
        for t in r.traces:  # parent links reconstruct the steps
            assert len(t.steps) == 3 and t.steps[0] in ("d0s0", "d0s1") and len(t.step_scores) == 3
        assert r.cost.generated_tokens == 4 * 2 + 4 * 2 + 4 * 3
        assert r.cost.prm_steps == 4 * 1 + 4 * 2 + 4 * 3


def test_beam_search_max_iterations_flags_unfinished():
    policy, prm = StepPolicy(finish_depth=10), StepPRM()
    cfg = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=2)
    r = beam_search(policy, PROBLEMS[:1], cfg, seed=0, prm=prm)[0]
    assert len(policy.calls) == 2
    assert r.traces and not any(t.finished for t in r.traces)
    assert all(n["status"] != "open" for n in r.tree if n["id"] != 0)


def test_duplicate_filter_prunes_identical_siblings():
    class Same(StepPolicy):
        def generate(self, prompts, params):
            out = super().generate(prompts, params)
            for samples in out:  # every sample of a prompt says the same thing
                for c in samples:
                    c.text = samples[0].text
            return out

    cfg = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=2, filter_duplicates=True)
    r = beam_search(Same(finish_depth=10), PROBLEMS[:1], cfg, seed=0, prm=StepPRM())[0]
    first = [n for n in r.tree if n["depth"] == 1]
    assert sum(n["status"] == "kept" for n in first) == 1


def test_dvts_subtrees_are_greedy_and_independent():
    policy, prm = StepPolicy(finish_depth=3, correct=(0, 1)), StepPRM()
    cfg = SearchConfig(strategy="dvts", n=8, beam_width=4, max_iterations=6)
    results = dvts(policy, PROBLEMS, cfg, seed=0, prm=prm)
    assert policy.calls == [(4, 4), (4, 4), (4, 4)]  # 2 problems x 2 subtrees, each expanded M=4 times
    for r in results:
        assert len(r.traces) == 8
        assert all(t.finished for t in r.traces)
        tree = nodes(r)
        assert sum(n["depth"] == 1 for n in tree.values()) == 8  # 2 subtrees x M
        # greedy: each subtree grows only from its best child (d0s0), never from a pruned one
        parents = {n["parent"] for n in tree.values() if n["depth"] == 2}
        assert all(tree[p]["step"] == "d0s0" and tree[p]["status"] == "kept" for p in parents)


def test_dvts_never_counts_unfinished_candidates():
    policy, prm = StepPolicy(finish_depth=10), StepPRM()
    cfg = SearchConfig(strategy="dvts", n=4, beam_width=2, max_iterations=2)
    r = dvts(policy, PROBLEMS[:1], cfg, seed=0, prm=prm)[0]
    assert len(r.traces) == 4 and not any(t.finished for t in r.traces)
    assert all(n["status"] in ("unfinished", "pruned", "kept") for n in r.tree if n["id"])


class FirstSampleFinishes(StepPolicy):
    """Sample 0 (the PRM's favourite) answers at once; the others write one more step per call."""

    def _step(self, depth, i, prompt):
        if i == 0:
            return Continuation(f"d{depth}s0 so \\boxed{{7}}", 3, "eos", len(prompt))
        return super()._step(depth, i, prompt)


def test_dvts_complete_leaves_samples_unfinished_siblings_to_their_end():
    cfg = SearchConfig(strategy="dvts", n=8, beam_width=4, max_iterations=4)
    plain = dvts(FirstSampleFinishes(finish_depth=3), PROBLEMS, cfg, seed=0, prm=StepPRM())
    assert all(sum(t.finished for t in r.traces) == 2 for r in plain)  # one finished best step per subtree

    policy, prm = FirstSampleFinishes(finish_depth=3), StepPRM()
    cfg.complete_leaves = True
    results = dvts(policy, PROBLEMS, cfg, seed=0, prm=prm)
    # one search iteration (every subtree's best child finished), then one batched completion call for the
    # 2 problems x 2 subtrees x 3 unfinished siblings, n=1 each
    assert policy.calls == [(4, 4), (12, 1)]
    for r, p in zip(results, plain):
        assert len(r.traces) == 8 and all(t.finished and t.answer is not None for t in r.traces)
        assert all(len(t.step_scores) == len(t.steps) for t in r.traces)
        tree = nodes(r)
        # the tree keeps the siblings (flagged unfinished) with their sampled ends as children
        siblings = [n for n in tree.values() if n["depth"] == 1 and n["status"] == "unfinished"]
        ends = [n for n in tree.values() if n["depth"] == 2]
        assert len(siblings) == 6 and sorted(n["parent"] for n in ends) == sorted(n["id"] for n in siblings)
        assert all(n["status"] == "finished" for n in ends)
        completed = [t for t in r.traces if len(t.steps) > 1]
        assert len(completed) == 6 and all(t.steps[0] in ("d0s1", "d0s2", "d0s3") for t in completed)
        assert r.cost.generated_tokens > p.cost.generated_tokens and r.cost.prm_steps > p.cost.prm_steps


def test_beam_search_complete_leaves_finishes_beams_cut_by_max_iterations():
    policy, prm = StepPolicy(finish_depth=4), StepPRM()
    cfg = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=2, complete_leaves=True)
    r = beam_search(policy, PROBLEMS[:1], cfg, seed=0, prm=prm)[0]
    assert policy.calls == [(1, 4), (2, 2), (2, 1)]  # 2 iterations, then the 2 kept beams completed
    finished = [t for t in r.traces if t.finished]
    assert len(finished) == 2 and all(len(t.steps) == 4 for t in finished)
    assert sum(n["status"] == "finished" for n in r.tree) == 2


def test_lookahead_rolls_greedy_steps_before_scoring():
    policy, prm = StepPolicy(finish_depth=4), StepPRM()
    cfg = SearchConfig(strategy="beam_search", n=2, beam_width=2, max_iterations=1, lookahead=2)
    r = beam_search(policy, PROBLEMS[:1], cfg, seed=0, prm=prm)[0]
    # iteration call (n=2) + 2 lookahead calls of n=1 on both candidates
    assert policy.calls == [(1, 2), (2, 1), (2, 1)]
    # ranking uses the lookahead path (3 steps), the stored step scores only the node's own path
    assert all(len(t.step_scores) == 1 for t in r.traces)


def test_search_needs_prm():
    with pytest.raises(ValueError, match="needs a PRM"):
        beam_search(StepPolicy(), PROBLEMS, SearchConfig(strategy="beam_search", n=4, beam_width=2), seed=0)


def test_n_must_be_multiple_of_beam_width():
    with pytest.raises(ValueError, match="multiple"):
        SearchConfig(strategy="dvts", n=6, beam_width=4)


def test_best_of_n_with_prm_and_selection():
    policy, prm = StepPolicy(finish_depth=1, correct=(2,)), StepPRM()
    r = best_of_n(policy, PROBLEMS[:1], SearchConfig(n=4), seed=0, prm=prm)[0]
    assert [t.score for t in r.traces] == [1.0, 0.9, 0.8, 0.7]


def test_selectors():
    def t(ans, score, finished=True):
        return Trace("p", "", [], answer=ans, score=score, finished=finished)

    traces = [t("1", 0.9), t("2", 0.5), t("2", 0.5), t("3", 0.1), t("1", 0.99, finished=False)]
    picks = select_answers(traces)
    assert traces[picks["majority"]].answer == "2"  # 2 votes
    assert traces[picks["naive"]].answer == "1"  # single best finished score (0.9), unfinished ignored
    assert traces[picks["weighted"]].answer == "2"  # 1.0 > 0.9


def test_best_of_n_with_prm_survives_empty_completions():
    """A sample that ends at once (EOS first) has no steps; it is still scored and counted, not a crash."""
    from synth.generate.engine import Continuation

    class EmptyFirst(StepPolicy):
        def generate(self, prompts, params):
            return [
                [Continuation("", 1, "eos", 3)] + [Continuation("so \\boxed{7}", 3, "eos", 3)] * (params.n - 1)
                for _ in prompts
            ]

    results = best_of_n(EmptyFirst(), PROBLEMS, SearchConfig(n=3), seed=0, prm=StepPRM())
    for r in results:
        assert r.cost.prm_steps == 3 and len(r.traces[0].step_scores) == 1 and r.traces[0].answer is None


class SentencePolicy(FakeEngine):
    """Writes sentence ` d{depth}s{i}.` (cut like an engine with include_stop: the ". " kept); at
    `finish_depth` it ends (EOS) with a boxed answer. Records prompts and sampling params."""

    def __init__(self, finish_depth: int = 3):
        self.finish_depth, self.prompts, self.params = finish_depth, [], []

    def chat_prompt(self, problem: str) -> str:
        return f"Q: {problem}\nA:"

    def generate(self, prompts, params):
        self.prompts += prompts
        self.params.append(params)
        out = []
        for p in prompts:
            depth = p.split("A:", 1)[1].count(".")
            if depth + 1 >= self.finish_depth:
                out.append([Continuation(f" d{depth}s{i} so \\boxed{{7}}", 3, "eos", len(p)) for i in range(params.n)])
            else:
                out.append([Continuation(f" d{depth}s{i}. ", 2, "stop", len(p)) for i in range(params.n)])
        return out


@pytest.mark.parametrize("search", [beam_search, dvts])
def test_sentence_steps_continue_after_the_full_stop(search):
    pol = SentencePolicy()
    cfg = SearchConfig(strategy=search.__name__, n=4, beam_width=2, step_cut="sentence")
    [res] = search(pol, [Problem("p", "2+5?", "7", "test")], cfg, seed=0, prm=StepPRM())
    assert all(p.stop == [". ", ".\n", "? ", "?\n", "! ", "!\n"] and p.include_stop for p in pol.params)
    assert all(not p.endswith(" ") for p in pol.prompts)
    assert "Q: 2+5?\nA: d0s0. d1s0" in "".join(pol.prompts)  # sample 0 ranks best at every depth
    best = max(res.traces, key=lambda t: t.score)
    assert best.completion == "d0s0. d1s0. d2s0 so \\boxed{7}" and best.steps == [
        "d0s0.",
        "d1s0.",
        "d2s0 so \\boxed{7}",
    ]
    assert best.finished and best.answer == "7"
    assert {n["lead"] for n in res.tree if n["parent"] is not None} == {" "}


def test_step_cut_is_checked():
    with pytest.raises(ValueError, match="step_cut: 'clause' is not one of"):
        SearchConfig(step_cut="clause")
    with pytest.raises(ValueError, match="step delimiter must not be empty"):
        SearchConfig(step_delimiter="")
    assert SearchConfig(step_cut="sentence", step_delimiter="").step_rule.stops[0] == ". "
