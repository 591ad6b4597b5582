import pytest

from synth.evaluate import (
    accuracy_curves,
    answer_key,
    compute_optimal,
    difficulty_buckets,
    first_n_reaching,
    majority_index,
    pass_at_k,
    plot_curves,
    powers_of_two,
)


def row(pid, answers, verified, scores=None, difficulty=None):
    return {
        "id": pid,
        "answers": answers,
        "verified": verified,
        "finished": [True] * len(answers),
        "scores": scores,
        "difficulty": difficulty,
        "majority_verified": False,
    }


def test_answer_key_groups_equal_numbers():
    assert answer_key("3.0") == answer_key("3") == answer_key(" 3 ")
    assert answer_key("1/2") == answer_key("0.5")
    assert answer_key(None) is None and answer_key("  ") is None
    assert majority_index(["2", "3", "3.0", None]) == 1


def test_pass_at_k():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_curves_on_hand_made_rows():
    rows = [
        row("a", ["1", "1", "2", "2"], [True, True, False, False], [0.9, 0.8, 0.1, 0.1]),
        row("b", ["5", "6", "6", "7"], [True, False, False, False], [0.9, 0.2, 0.2, 0.1]),
    ]
    curves = accuracy_curves(rows, samples=200, seed=1)
    assert powers_of_two(4) == [1, 2, 4] and set(curves["majority"]) == {1, 2, 4}
    # N=1: every selector is exactly the mean per-sample accuracy (0.5 + 0.25) / 2, i.e. pass@1
    for how in ("majority", "naive", "weighted", "pass"):
        assert curves[how][1] == pytest.approx(0.375, abs=1e-12)
    # pass@2 is the unbiased estimate: a has 2 of 4 right, b 1 of 4
    assert curves["pass"][2] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2, abs=1e-12)
    # N=4 is exact (no subsampling): majority: a tie 1 vs 2 -> first (correct); b: 6 wins (wrong)
    assert curves["majority"][4] == 0.5
    assert curves["naive"][4] == 1.0  # highest score is the right answer in both
    assert curves["weighted"][4] == 1.0  # a: 1.7 vs 0.2; b: 0.9 vs 0.4
    assert curves["pass"][4] == 1.0
    assert first_n_reaching(curves["naive"], 1.0) == 4 or first_n_reaching(curves["naive"], 1.0) <= 4


def test_compute_optimal_picks_best_strategy_per_bucket():
    easy_a = {"id": "e", "majority_verified": True, "weighted_verified": True}
    hard_a = {"id": "h", "majority_verified": False, "weighted_verified": False}
    easy_b = {"id": "e", "majority_verified": False, "weighted_verified": False}
    hard_b = {"id": "h", "majority_verified": True, "weighted_verified": True}
    out = compute_optimal({"A": [easy_a, hard_a], "B": [easy_b, hard_b]}, "weighted", {"e": 0, "h": 1})
    assert out["choice"] == {0: "A", 1: "B"} and out["accuracy"] == 1.0


def test_compute_optimal_cross_fitted_choice_never_sees_the_problem_it_scores():
    # Bucket 0 holds one problem where only B is right: in-sample the bucket picks B and scores it,
    # cross-fitted that problem's choice comes from the other folds, which have no bucket-0 problem (-> A).
    a = [
        {"id": "p0", "weighted_verified": False},
        {"id": "p1", "weighted_verified": True},
        {"id": "p2", "weighted_verified": True},
    ]
    b = [
        {"id": "p0", "weighted_verified": True},
        {"id": "p1", "weighted_verified": False},
        {"id": "p2", "weighted_verified": False},
    ]
    out = compute_optimal({"A": a, "B": b}, "weighted", {"p0": 0, "p1": 1, "p2": 1}, folds=3)
    assert out["choice"] == {0: "B", 1: "A"} and out["accuracy"] == 1.0
    assert out["cross_fitted_accuracy"] == pytest.approx(2 / 3)
    assert out["correct"] == {"p0": False, "p1": True, "p2": True}


def test_difficulty_buckets_by_estimate():
    rows = [
        {"id": "easy", "difficulty": 5.0, "scores": [0.9, 0.8], "verified": [True, False]},
        {"id": "mid", "difficulty": 1.0, "scores": [0.5, 0.5], "verified": [True, True]},
        {"id": "hard", "difficulty": 3.0, "scores": [0.1, None], "verified": [False, False]},
    ]
    assert difficulty_buckets(rows, 3, "prm") == {"easy": 0, "mid": 1, "hard": 2}  # high PRM scores: easy
    assert difficulty_buckets(rows, 3, "oracle") == {"mid": 0, "easy": 1, "hard": 2}
    assert difficulty_buckets(rows, 3, "pool") == {"mid": 0, "hard": 1, "easy": 2}
    assert difficulty_buckets(rows, 3) == difficulty_buckets(rows, 3, "pool")
    two_levels = [{**r, "difficulty": 1.0 + (r["id"] == "hard")} for r in rows]  # cannot make thirds: prm
    assert difficulty_buckets(two_levels, 3) == difficulty_buckets(rows, 3, "prm")
    no_pool = [{k: v for k, v in r.items() if k != "difficulty"} for r in rows]
    assert difficulty_buckets(no_pool, 3) == difficulty_buckets(rows, 3, "prm")
    with pytest.raises(ValueError, match="'pool' needs a difficulty"):
        difficulty_buckets(no_pool, 3, "pool")
    with pytest.raises(ValueError, match="unknown difficulty estimate"):
        difficulty_buckets(rows, 3, "guess")


def test_plot_file_is_written(tmp_path):
    path = tmp_path / "p.png"
    plot_curves({"best_of_n": {"majority": {1: 0.1, 2: 0.2, 4: 0.3}}}, path)
    assert path.exists() and path.stat().st_size > 1000


def _run_dir(tmp_path, name: str, strategy: str, right: list[bool]):
    """A `synth generate`-like output dir: 6 problems, 2 completions each, `right` = the weighted pick's outcome."""
    import json

    out = tmp_path / name
    out.mkdir()
    with (out / "rows.jsonl").open("w") as f:
        for k, ok in enumerate(right):
            f.write(
                json.dumps(
                    {
                        "id": f"p{k}",
                        "strategy": strategy,
                        "difficulty": float(k),
                        "answers": ["1", "2"],
                        "verified": [ok, False],
                        "finished": [True, True],
                        "scores": [0.9, 0.1],
                        "majority_verified": ok,
                        "weighted_verified": ok,
                        "naive_verified": ok,
                    }
                )
                + "\n"
            )
    return str(out)


def test_evaluate_runs_writes_plot_table_and_compute_optimal(tmp_path):
    from synth.eval_runs import EvalConfig, evaluate_runs

    bon = _run_dir(tmp_path, "bon", "best_of_n", [True, True, True, False, False, False])
    beam = _run_dir(tmp_path, "beam", "beam_search", [False, False, False, True, True, True])
    out = tmp_path / "eval"
    report = evaluate_runs(EvalConfig(runs=[bon, beam], output_dir=str(out), difficulty="pool", buckets=2, folds=3))
    assert (out / "accuracy_vs_n.png").stat().st_size > 1000
    md = (out / "eval.md").read_text()
    assert "cross-fitted" in md and "difficulty estimate: pool" in md
    opt = report["compute_optimal"]
    # easy half: best-of-N right on all; hard half: beam search right on all -> the mix gets every problem
    assert opt["choice"] == {0: "best_of_n", 1: "beam_search"}
    assert opt["accuracy"] == 1.0 and opt["cross_fitted_accuracy"] == 1.0
    assert report["by_difficulty"]["best_of_n"] == {0: 1.0, 1: 0.0}
    with pytest.raises(ValueError, match="no rows"):
        evaluate_runs(EvalConfig(runs=[str(tmp_path / "eval")], output_dir=str(out)))
