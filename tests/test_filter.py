import json
import time

import pytest
from datasets import load_dataset

from synth.commands.cli import main
from synth.filter.formats import preference_pairs, to_preference, to_sft, to_stepwise
from synth.filter.run import FilterConfig, build_index, load_eval_set, run, select
from synth.filter.select import (
    FilterError,
    Filters,
    NgramIndex,
    build_filters,
    correct_label,
    decontaminate,
    exact_dedup,
    flatten,
    length_limits,
    majority_agreement,
    near_dedup,
    non_empty,
    normalize,
    run_filters,
    score_threshold,
    top_k_per_problem,
    verified_only,
)
from synth.formats import validate
from synth.hub import write_dataset


def row(
    pid, completions, verified, answers=None, problem=None, gold="5", scores=None, tokens=None, finished=None, **kw
):
    n = len(completions)
    return {
        "id": pid,
        "problem": problem or f"Problem {pid}: what is 2 + 3?",
        "gold_answer": gold,
        "source": "test",
        "difficulty": None,
        "completions": completions,
        "steps": [c.split("\n\n") if c else [] for c in completions],
        "answers": answers or [gold if v else "6" for v in verified],
        "verified": verified,
        "num_tokens": tokens or [len(c.split()) for c in completions],
        "finished": finished or [True] * n,
        "scores": scores,
        "step_scores": None,
        "strategy": "best_of_n",
        "n": n,
        "seed": 0,
        "model": "tiny",
        **kw,
    }


def recs(*rows):
    return flatten(rows)


GOOD = "We add the numbers.\n\nTwo plus three gives five.\n\nThe answer is $\\boxed{5}$."
BAD = "We multiply instead.\n\nTwo times three is six.\n\nThe answer is $\\boxed{6}$."


def test_flatten_one_record_per_completion_with_agreement():
    rs = recs(row("a", [GOOD, BAD, GOOD], [True, False, True], majority_answer="5"))
    assert [r["index"] for r in rs] == [0, 1, 2]
    assert rs[0]["agreement"] == pytest.approx(2 / 3) and rs[0]["agrees"] and not rs[1]["agrees"]
    assert rs[1]["steps"] == BAD.split("\n\n")
    bad = row("b", [GOOD, BAD], [True, False])
    bad["answers"] = ["5"]
    with pytest.raises(FilterError, match="1 answers for 2 completions"):
        flatten([bad])


def test_normalize_unicode_whitespace_case():
    assert normalize("  ＡＢＣ\u00a0 ﬁnal\n\n\tX ") == "abc final x"
    assert normalize("") == normalize(None) == ""
    assert normalize("²") == "2"


def test_non_empty_and_verified_and_length():
    rs = recs(row("a", [GOOD, "", "   \n", BAD], [True, False, False, None], answers=["5", None, None, "6"]))
    assert [r["index"] for r in non_empty(rs)] == [0, 3]
    assert [r["index"] for r in verified_only(rs)] == [0]
    assert [r["index"] for r in verified_only(rs, keep_ungraded=True)] == [0, 3]
    rs = recs(row("a", ["x", "y", "z"], [True] * 3, tokens=[1, 50, 500]))
    assert [r["num_tokens"] for r in length_limits(rs, 10, 100)] == [50]
    assert len(length_limits(rs, 0, None)) == 3


def test_majority_agreement_for_pools_without_gold():
    rows = [
        row("a", [GOOD, GOOD, GOOD, BAD], [None] * 4, answers=["5", "5.0", "5", "6"], gold=None, majority_answer="5"),
        row("b", [GOOD, BAD], [None] * 2, answers=["5", "6"], gold=None, majority_answer="5"),
        row("c", [BAD, GOOD], [False, True], answers=["6", "5"], majority_answer="6"),
    ]
    rs = flatten(rows)
    kept = majority_agreement(rs, 0.6)
    assert [(r["id"], r["index"]) for r in kept] == [("a", 0), ("a", 1), ("a", 2)]  # "5.0" votes with "5"; c: 1/2 < 0.6
    assert [(r["id"], r["index"]) for r in majority_agreement(rs, 0.8)] == []
    # graded completions are left to the verified filter when only_ungraded
    assert [(r["id"], r["index"]) for r in majority_agreement(rs, 0.6, only_ungraded=True)][-2:] == [("c", 0), ("c", 1)]
    assert correct_label(rs[3], "majority", 0.6) is False and correct_label(rs[4], "majority", 0.6) is None
    assert correct_label(rs[7], "auto", 0.6) is True and correct_label(rs[0], "verified", 0.6) is None


def test_score_threshold_needs_scores():
    with pytest.raises(FilterError, match="needs PRM scores.*--prm"):
        score_threshold(recs(row("a", [GOOD], [True])), 0.5)
    rs = recs(row("a", [GOOD, BAD, GOOD + " ok"], [True, False, True], scores=[0.9, 0.2, 0.5]))
    assert [r["score"] for r in score_threshold(rs, 0.5)] == [0.9, 0.5]


def test_exact_dedup_normalises_unicode_case_and_whitespace():
    rs = recs(
        row("a", ["The answer is 5.", "THE  answer\u00a0is 5.", "The answer is ５.", "The answer is 6."], [True] * 4),
        row("b", ["The answer is 5."], [True]),
    )
    kept = exact_dedup(rs)
    assert [(r["id"], r["index"]) for r in kept] == [("a", 0), ("a", 3), ("b", 0)]  # same text, another problem: kept


def test_near_dedup_within_a_problem():
    base = " ".join(f"step {i} adds {i} apples to the basket of fruit" for i in range(40))
    variant = base.replace("step 7 adds", "step 7 puts")
    other = " ".join(f"we now count {i} pears in box {i * 3}" for i in range(40))
    rs = recs(row("a", [base, variant, other], [True] * 3), row("b", [variant], [True]))
    kept = near_dedup(rs, threshold=0.8)
    assert [(r["id"], r["index"]) for r in kept] == [("a", 0), ("a", 2), ("b", 0)]
    assert len(near_dedup(rs, threshold=1.0)) == 4  # only identical n-gram sets at 1.0


def test_near_dedup_empty_short_unicode_and_huge_text():
    huge = " ".join(f"w{i % 5000} δ{i % 7}" for i in range(300_000))
    rs = recs(
        row(
            "a",
            ["", "5", "5", "Ünïcödé ✓ 答案是 5", "ünïcödé ✓ 答案是 5", huge, huge + " extra words here"],
            [True] * 7,
        )
    )
    start = time.perf_counter()
    kept = near_dedup(rs, threshold=0.9)
    assert time.perf_counter() - start < 20
    assert [r["index"] for r in kept] == [0, 1, 3, 5]


def test_top_k_by_score_then_shortest_and_distinct():
    rs = recs(row("a", ["a b c", "A  b c", "d e", "f g h i"], [True] * 4, scores=[0.9, 0.95, 0.1, 0.5]))
    assert [r["index"] for r in top_k_per_problem(rs, 2)] == [1, 3]  # 0 repeats 1's text
    rs = recs(row("a", ["a b c", "d", "e f", "d"], [True] * 4), row("b", ["x"], [True]))
    assert [(r["id"], r["index"]) for r in top_k_per_problem(rs, 2)] == [("a", 1), ("a", 2), ("b", 0)]


def test_funnel_counts():
    rows = [
        row(
            "a",
            [GOOD, GOOD, BAD, "", GOOD + " Check: 2 + 3 = 5."],
            [True, True, False, False, True],
            finished=[True, True, True, True, False],
        ),
        row("b", [BAD, GOOD], [False, True]),
    ]
    out, funnel = run_filters(flatten(rows), build_filters(Filters(top_k=1)))
    assert [(s.name, s.kept, s.removed) for s in funnel] == [
        ("non-empty", 6, 1),
        ("finished", 5, 1),
        ("verified", 3, 2),
        ("majority >= 0.5 (no gold)", 3, 0),
        ("exact duplicates", 2, 1),
        ("near duplicates (jaccard >= 0.85)", 2, 0),
        ("top-1 per problem", 2, 0),
    ]
    assert [(r["id"], r["index"]) for r in out] == [("a", 0), ("b", 1)]


EVAL = "A farmer has seventeen sheep and all but nine run away through a hole in the old wooden fence how many are left"


def test_decontamination_catches_a_planted_overlap():
    index = NgramIndex(13)
    index.add("held-out", [EVAL, "What is 2 + 2?", ""])
    planted = "Solve this. " + " ".join(EVAL.upper().split()[2:16]) + ". Then add one."  # 14 words of it, shouted
    near_miss = " ".join(EVAL.split()[:12])  # only 12 consecutive words
    rs = recs(
        row("a", [GOOD], [True], problem=planted),
        row("b", [GOOD], [True], problem=near_miss),
        row("c", [GOOD], [True], problem="Quick one: what is 2 + 2? Answer fast."),
        row("d", [GOOD, "As asked: " + EVAL], [True, True], problem="Unrelated counting problem with ducks."),
    )
    assert index.sizes["held-out"] == 2
    kept = decontaminate(rs, index, "held-out")
    assert [r["id"] for r in kept] == ["b", "d", "d"]
    assert [(r["id"], r["index"]) for r in decontaminate(rs, index, "held-out", completions=True)] == [
        ("b", 0),
        ("d", 0),
    ]
    huge = " ".join(f"word{i % 997} ünï{i % 13}" for i in range(200_000))
    assert (
        not index.hits(huge, "held-out")
        and index.hits(huge + " " + EVAL, "held-out")
        and not index.hits("", "held-out")
    )


def test_formats():
    rs = recs(row("a", [GOOD, BAD], [True, False], scores=[0.8, 0.3]), row("b", [GOOD], [True]))
    sft = to_sft(rs[:1], system_prompt="Be brief.")
    assert sft[0]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": rs[0]["problem"]},
    ]
    assert sft[0]["completion"] == [{"role": "assistant", "content": GOOD}]
    assert to_sft(rs[:1])[0]["prompt"] == [{"role": "user", "content": rs[0]["problem"]}]
    for r in rs:
        r["correct"] = correct_label(r, "auto", 0.5)
    step = to_stepwise(rs)
    assert step[0]["prompt"] == rs[0]["problem"] and step[0]["completions"] == GOOD.split("\n\n")
    assert step[0]["labels"] == [True, True, True] and step[1]["labels"] == [False, False, False]
    pairs = preference_pairs(rs)
    assert len(pairs) == 1  # problem b has no wrong completion
    pref = to_preference(pairs)[0]
    assert pref["chosen"] == [{"role": "assistant", "content": GOOD}] and pref["rejected"][0]["content"] == BAD
    assert pref["prompt"] == [{"role": "user", "content": rs[0]["problem"]}] and pref["id"] == "a"


def test_select_stepwise_and_preference_keep_negatives():
    rows = [
        row("a", [GOOD, BAD], [True, False]),
        row(
            "b",
            [GOOD, BAD, "Six, as 2 times 3 is 6: $\\boxed{6}$"],
            [None] * 3,
            answers=["5", "6", "6"],
            gold=None,
            majority_answer="6",
        ),
    ]
    out, funnel = select(flatten(rows), FilterConfig(dataset="x", format="stepwise"))
    assert [(r["id"], r["labels"][-1]) for r in out] == [
        ("a", True),
        ("a", False),
        ("b", False),
        ("b", True),
        ("b", True),
    ]
    assert funnel[-1].name == "correctness known"
    out, funnel = select(flatten(rows), FilterConfig(dataset="x", format="preference"))
    assert [(r["id"], r["chosen_answer"], r["rejected_answer"]) for r in out] == [("a", "5", "6"), ("b", "6", "5")]
    with pytest.raises(ValueError, match="needs correct/wrong labels"):
        FilterConfig(dataset="x", format="preference", filters=Filters(correctness="none"))


@pytest.fixture
def gen_dir(tmp_path):
    rows = [
        row("a", [GOOD, GOOD, BAD, "Ünïcödé reasoning ✓ then $\\boxed{5}$"], [True, True, False, True]),
        row("b", [BAD, GOOD + "\n\nDone."], [False, True]),
        row("c", [BAD, BAD + "!"], [False, False]),
        row("leak", [GOOD], [True], problem="Planted: " + EVAL),
    ]
    write_dataset(rows, tmp_path / "gen", {"name": "gen", "model": "tiny"})
    return tmp_path / "gen"


def test_filter_command_writes_loadable_dataset_and_card(gen_dir, tmp_path, capsys):
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"question": EVAL, "answer": "9"}) + "\n")
    out = tmp_path / "sft"
    assert (
        main(
            [
                "filter",
                "--dataset",
                str(gen_dir),
                "--output_dir",
                str(out),
                "--decontaminate",
                str(evals),
                "--system_prompt",
                "Think.",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| decontaminate eval.jsonl | 4 | 1 |" in printed and "wrote 3 sft rows" in printed
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    cfg = FilterConfig(dataset=str(gen_dir), system_prompt="Think.", decontaminate=[str(evals)])
    gen = load_dataset(str(gen_dir), split="train", cache_dir=str(tmp_path / "hf-cache"))
    expected, _ = select(flatten(gen.to_list()), cfg, build_index(cfg.decontaminate, 13))
    assert ds.to_list() == expected
    assert [(r["id"], r["completion"][0]["content"]) for r in expected] == [
        ("a", GOOD),
        ("a", "Ünïcödé reasoning ✓ then $\\boxed{5}$"),
        ("b", GOOD + "\n\nDone."),
    ]
    assert ds[0]["prompt"][0] == {"role": "system", "content": "Think."}
    card = (out / "README.md").read_text()
    for text in (
        "| input completions | 9 |",
        "| exact duplicates | 3 | 1 |",
        "**output rows (sft)** | **3**",
        "Model: `tiny`",
        "Strategy: `best_of_n` with N = 1, 2, 4",
        "load_dataset(",
        "eval.jsonl`: 1 completions removed",
    ):
        assert text in card
    assert json.loads((out / "funnel.json").read_text())["rows"] == 3


def test_filter_command_errors(gen_dir, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["filter", "--dataset", str(gen_dir), "--output_dir", out, "--filters.min_score", "0.5"]) == 2
    assert "needs PRM scores" in capsys.readouterr().err
    assert main(["filter", "--dataset", str(gen_dir), "--output_dir", out]) == 0
    assert main(["filter", "--dataset", str(gen_dir), "--output_dir", out]) == 0  # same settings: a retry rebuilds
    assert main(["filter", "--dataset", str(gen_dir), "--output_dir", out, "--filters.top_k", "1"]) == 2
    assert "--overwrite true" in capsys.readouterr().err
    assert (
        main(["filter", "--dataset", str(gen_dir), "--output_dir", out, "--filters.top_k", "1", "--overwrite", "true"])
        == 0
    )
    assert main(["filter", "--dataset", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o2")]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert (
        main(
            [
                "filter",
                "--dataset",
                str(gen_dir),
                "--output_dir",
                str(tmp_path / "o3"),
                "--filters.correctness",
                "verified",
                "--filters.min_tokens",
                "10000",
            ]
        )
        == 2
    )
    assert "every completion was filtered out" in capsys.readouterr().err


def test_filter_stepwise_output_is_a_valid_prm_dataset(gen_dir, tmp_path):
    run(FilterConfig(dataset=str(gen_dir), output_dir=str(tmp_path / "st"), format="stepwise"))
    ds = load_dataset(str(tmp_path / "st"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    validate(ds, "stepwise")
    assert sorted({tuple(set(r["labels"])) for r in ds}) == [(False,), (True,)]
    run(FilterConfig(dataset=str(gen_dir), output_dir=str(tmp_path / "pref"), format="preference"))
    pref = load_dataset(str(tmp_path / "pref"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert pref.column_names[:3] == ["prompt", "chosen", "rejected"] and len(pref) == 2


def test_eval_set_from_pool_mapping_and_help(capsys):
    name, texts = load_eval_set(
        {"source": "reasoning_gym", "tasks": ["basic_arithmetic"], "num_problems": 3, "seed": 99}
    )
    assert name == "reasoning_gym:basic_arithmetic@seed99" and len(texts) == 3
    with pytest.raises(FilterError, match="neither a local file"):
        load_eval_set("no-such-file.jsonl")
    assert main(["filter", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--filters.near_dup_threshold", "--decontaminate", "--push_to_hub", "--format"):
        assert opt in out
