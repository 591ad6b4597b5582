import threading
import time

import pytest
import reasoning_gym

from synth import verify as V
from synth.records import Problem
from synth.verify import extract_answer, math_equal, score_with_task, verify_answers, verify_many


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("\\boxed{3} then \\boxed{-4}", "-4"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("\\fbox{12}", "12"),
        ("The answer is 42.", "42"),
        ("The final answer is $\\boxed{7}$. I hope it is correct.", "7"),
        ("The answer is 15, which is odd", "15"),
        ("Answer: -7.", "-7"),
        ("the answer is 3/4.", "3/4"),
        ("so x = -3.5 in the end", "-3.5"),
        ("we get 1,234 apples", "1234"),
        ("no answer here", None),
        ("", None),
        ("\\boxed{unclosed", None),
        ('In this scenario, the answer is "15"', "15"),
        ("The final answer is **-8**.", "-8"),
        ("The answer is `7`", "7"),
        ('The answer is "8."', "8"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "pred,gold,ok",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("1/2", "0.5", True),
        ("-3", "-3", True),
        ("-3", "3", False),
        ("1,234", "1234", True),
        ("3.0", "3", True),
        ("", "5", False),
        (None, "5", False),
        ("\\frac{1}{", "1", False),
        ("(x+1)^2", "x^2+2x+1", True),
        ("\\sqrt{4}", "2", True),
    ],
)
def test_math_equal(pred, gold, ok):
    assert math_equal(pred, gold) is ok


def test_math_equal_off_the_main_thread():
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", math_equal("\\frac{2}{4}", "x/2 + 1/2 - x/2")))
    thread.start()
    thread.join(60)
    assert out["r"] is True


def _slow(pred, gold, timeout):
    time.sleep(30)
    return True


def test_timeout_returns_false_quickly(monkeypatch):
    monkeypatch.setattr(V, "_math_verify", _slow)
    V._reset_pool()  # fresh workers that import the patched function by name
    started = time.perf_counter()
    assert verify_many([("\\sqrt{x}", "\\sqrt{y}")], timeout=1.0) == [False]
    assert time.perf_counter() - started < 15
    monkeypatch.undo()
    V._reset_pool()
    assert math_equal("\\frac{1}{2}", "0.5")  # the pool still works after a timeout


def rg_problems():
    ds = reasoning_gym.create_dataset(
        "basic_arithmetic", size=3, seed=1, min_terms=2, max_terms=2, min_digits=1, max_digits=1
    )
    return [
        Problem(
            f"p{i}", e["question"], e["answer"], "rg", {"reasoning_gym": {"dataset": "basic_arithmetic", "entry": e}}
        )
        for i, e in enumerate(ds)
    ]


def test_reasoning_gym_scorer_needs_full_credit():
    p = rg_problems()[0]
    assert score_with_task(p.answer, p) == 1.0
    assert verify_answers([p.answer, str(int(p.answer) + 1), f"The answer is {p.answer}", None], [p] * 4) == [
        True,
        False,
        False,
        False,
    ]
    assert 0 < score_with_task(f"The answer is {p.answer}", p) < 1.0  # partial credit exists, and is not verified


def test_no_gold_means_unknown():
    assert verify_answers(["3"], [Problem("x", "q", "", "file")]) == [None]
