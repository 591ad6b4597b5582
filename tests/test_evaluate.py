import pytest

from synth.evaluate import (accuracy_curves, answer_key, compute_optimal, first_n_reaching, majority_index, pass_at_k,
                            plot_curves, powers_of_two)


def row(pid, answers, verified, scores=None, difficulty=None):
    return {"id": pid, "answers": answers, "verified": verified, "finished": [True] * len(answers), "scores": scores,
            "difficulty": difficulty, "majority_verified": False}


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
    rows = [row("a", ["1", "1", "2", "2"], [True, True, False, False], [0.9, 0.8, 0.1, 0.1]),
            row("b", ["5", "6", "6", "7"], [True, False, False, False], [0.9, 0.2, 0.2, 0.1])]
    curves = accuracy_curves(rows, samples=200, seed=1)
    assert powers_of_two(4) == [1, 2, 4] and set(curves["majority"]) == {1, 2, 4}
    # N=1: every selector equals the mean per-sample accuracy (0.5 + 0.25) / 2
    for how in ("majority", "naive", "weighted", "pass"):
        assert curves[how][1] == pytest.approx(0.375, abs=0.05)
    # N=4 is exact (no subsampling): majority: a tie 1 vs 2 -> first (correct); b: 6 wins (wrong)
    assert curves["majority"][4] == 0.5
    assert curves["naive"][4] == 1.0        # highest score is the right answer in both
    assert curves["weighted"][4] == 1.0     # a: 1.7 vs 0.2; b: 0.9 vs 0.4
    assert curves["pass"][4] == 1.0
    assert first_n_reaching(curves["naive"], 1.0) == 4 or first_n_reaching(curves["naive"], 1.0) <= 4


def test_compute_optimal_picks_best_strategy_per_bucket():
    easy_a = {"id": "e", "majority_verified": True, "weighted_verified": True}
    hard_a = {"id": "h", "majority_verified": False, "weighted_verified": False}
    easy_b = {"id": "e", "majority_verified": False, "weighted_verified": False}
    hard_b = {"id": "h", "majority_verified": True, "weighted_verified": True}
    out = compute_optimal({"A": [easy_a, hard_a], "B": [easy_b, hard_b]}, "weighted", {"e": 0, "h": 1})
    assert out["choice"] == {0: "A", 1: "B"} and out["accuracy"] == 1.0


def test_plot_file_is_written(tmp_path):
    path = tmp_path / "p.png"
    plot_curves({"best_of_n": {"majority": {1: 0.1, 2: 0.2, 4: 0.3}}}, path)
    assert path.exists() and path.stat().st_size > 1000
