"""`synth label`: Monte-Carlo step labels on a fake policy whose rollout outcomes are known."""

from __future__ import annotations

import pytest

from synth.config import ConfigError
from synth.generate.engine import Continuation
from synth.hub import read_rows, write_dataset
from synth.journal import Journal
from synth.merge import MergeConfig, merge
from synth.prm.label import LabelConfig, label

K = 4


class RolloutPolicy:
    """A rollout from a prefix whose last step is `ok{c}` is correct for samples 0..c-1 (c of K);
    after a step `bad` no rollout is correct. Records every prompt it continues."""

    def __init__(self, gold: dict[str, str]):
        self.gold, self.prompts = gold, []

    def chat_prompt(self, problem: str) -> str:
        return f"Q: {problem}\n"

    def generate(self, prompts, params):
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            problem = p.split("\n", 1)[0][3:]
            last = p.rstrip("\n").split("\n")[-1]
            good = int(last[2:]) if last.startswith("ok") else 0
            out.append(
                [
                    Continuation(f"so \\boxed{{{self.gold[problem] if i < good else 'x'}}}", 3, "eos")
                    for i in range(params.n)
                ]
            )
        return out


def run_dir(tmp_path, traces: dict[str, list[tuple[list[str], bool]]]):
    """A generate-style dataset: one row per problem, its traces as (steps, verified)."""
    rows = []
    for k, (problem, ts) in enumerate(traces.items()):
        rows.append(
            {
                "id": f"p{k}",
                "problem": problem,
                "gold_answer": "7",
                "source": "test",
                "metadata": "{}",
                "completions": ["\n\n".join(s) for s, _ in ts],
                "steps": [s for s, _ in ts],
                "answers": ["7" if ok else "8" for _, ok in ts],
                "verified": [ok for _, ok in ts],
                "finished": [True] * len(ts),
            }
        )
    write_dataset(rows, tmp_path / "traces", {"name": "test traces"})
    return tmp_path / "traces"


def test_soft_and_hard_labels_from_known_rollouts(tmp_path):
    data = run_dir(
        tmp_path,
        {"What is 3+4?": [(["ok3", "ok1", "The answer is 7"], True), (["ok2", "bad", "The answer is 8"], False)]},
    )
    policy = RolloutPolicy({"What is 3+4?": "7"})
    stats = label(
        LabelConfig(dataset=str(data), rollouts=K, traces_per_problem=2, output_dir=str(tmp_path / "labels")),
        policy=policy,
    )
    rows = {r["id"]: r for r in Journal(tmp_path / "labels" / "rows.jsonl").read()}
    good, bad = rows["p0#0"], rows["p0#1"]
    # prefixes 1..k-1 get rollouts; the last step carries the trace's own verification
    assert good["soft_labels"] == [3 / K, 1 / K, 1.0] and good["labels"] == [True, True, True]
    assert bad["soft_labels"] == [2 / K, 0.0, 0.0] and bad["labels"] == [True, False, False]
    # the dataset: hard labels as booleans (what consumers of the stepwise format cast to), soft in their own column
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "labels"), split="train", cache_dir=str(tmp_path / "cache"))
    assert (
        str(ds.features["labels"].feature) == "Value('bool')"
        and str(ds.features["soft_labels"].feature) == "Value('float64')"
    )
    assert good["completions"] == ["ok3", "ok1", "The answer is 7"] and good["prompt"] == "What is 3+4?"
    assert len(policy.prompts) == 4 and all(p.endswith("\n\n") for p in policy.prompts)
    assert stats["steps"] == 6 and stats["rollouts_per_labelled_step"] == pytest.approx(K * 4 / 6)


def test_sharded_labels_concatenate_to_the_unsharded_dataset(tmp_path):
    problems = {
        f"What is {k}+1?": [([f"ok{k % 3}", "The answer is 7"], k % 2 == 0), (["bad", "The answer is 8"], False)]
        for k in range(5)
    }
    data = run_dir(tmp_path, problems)
    gold = {p: "7" for p in problems}
    whole = label(
        LabelConfig(dataset=str(data), rollouts=K, traces_per_problem=2, output_dir=str(tmp_path / "all")),
        policy=RolloutPolicy(gold),
    )
    parts = []
    for i in range(2):
        label(
            LabelConfig(
                dataset=str(data), rollouts=K, traces_per_problem=2, output_dir=str(tmp_path / f"s{i}"), shard=f"{i}/2"
            ),
            policy=RolloutPolicy(gold),
        )
        parts.append(Journal(tmp_path / f"s{i}" / "rows.jsonl").read())
    assert {r["problem_id"] for r in parts[0]}.isdisjoint({r["problem_id"] for r in parts[1]}) and all(parts)
    joined = merge(MergeConfig(runs=[str(tmp_path / "s1"), str(tmp_path / "s0")], output_dir=str(tmp_path / "joined")))
    assert joined["command"] == "label" and joined["shards"] == 2
    key = lambda rows: [(r["id"], r["soft_labels"]) for r in rows]  # noqa: E731
    assert key(Journal(tmp_path / "joined" / "rows.jsonl").read()) == key(
        Journal(tmp_path / "all" / "rows.jsonl").read()
    )
    assert key(read_rows(tmp_path / "joined")) == key(read_rows(tmp_path / "all"))
    assert joined["steps"] == whole["steps"]
    with pytest.raises(ValueError, match="shard"):
        LabelConfig(dataset=str(data), shard="2/2")


def test_one_step_traces_are_labelled_without_a_policy(tmp_path):
    """max_steps 1: every label is the trace's own verification, so no model is loaded (the name is bogus)."""
    data = run_dir(
        tmp_path,
        {
            "What is 3+4?": [
                (["The answer is 7"], True),
                (["The answer is 8"], False),
                (["ok1", "The answer is 7"], True),
            ]
        },
    )
    stats = label(
        LabelConfig(
            dataset=str(data),
            model="no/such-model",
            traces_per_problem=8,
            max_steps=1,
            output_dir=str(tmp_path / "final"),
        )
    )
    rows = sorted(Journal(tmp_path / "final" / "rows.jsonl").read(), key=lambda r: r["id"])
    assert [(r["id"], r["soft_labels"]) for r in rows] == [("p0#0", [1.0]), ("p0#1", [0.0])]
    assert stats["new_rollout_tokens"] == 0


def test_rescore_redoes_prm_picks_on_the_same_samples():
    from synth.prm.rescore import rescore_rows

    class LengthPRM:  # prefers short last steps
        def score(self, problems, steps):
            return [[1.0 / len(s) for s in path] for path in steps]

    row = {
        "id": "p",
        "problem": "q",
        "completions": ["a\n\nlong wrong", "b\n\nok", "c\n\nlong wrong"],
        "steps": [["a", "long wrong"], ["b", "ok"], ["c", "long wrong"]],
        "answers": ["8", "7", "8"],
        "verified": [False, True, False],
        "finished": [True, True, True],
        "majority_verified": False,
        "naive_verified": False,
        "weighted_verified": False,
    }
    new = rescore_rows([row], LengthPRM())[0]
    assert new["scores"] == [0.1, 0.5, 0.1] and new["step_scores"][1] == [1.0, 0.5]
    assert new["naive_verified"] and new["naive_answer"] == "7"
    assert new["weighted_verified"]  # 0.5 for "7" beats 0.1 + 0.1 for "8"
    assert row["naive_verified"] is False  # the input row is left as it was
    from synth.steps import StepRule

    row = dict(row, completions=["One. Two.", "One.", "x"])
    new = rescore_rows([row], LengthPRM(), steps=StepRule("sentence"))[0]  # each completion cut again
    assert new["steps"] == [["One.", "Two."], ["One."], ["x"]] and new["step_scores"][0] == [0.25, 0.25]


def test_sentence_labels_roll_out_right_after_each_full_stop(tmp_path):
    """step_cut: sentence relabels a trace's completion sentence by sentence; each rollout continues a
    prefix that ends at a full stop (no trailing space), as sentence-step search continues it."""
    # completion: "First add 3 and 4. That gives 7.\n\nThe answer is 7."
    data = run_dir(tmp_path, {"What is 3+4?": [(["First add 3 and 4. That gives 7.", "The answer is 7."], True)]})
    policy = RolloutPolicy({"What is 3+4?": "7"})
    label(
        LabelConfig(dataset=str(data), rollouts=K, step_cut="sentence", output_dir=str(tmp_path / "labels")),
        policy=policy,
    )
    [row] = Journal(tmp_path / "labels" / "rows.jsonl").read()
    assert row["completions"] == ["First add 3 and 4.", "That gives 7.", "The answer is 7."]
    assert policy.prompts == [
        "Q: What is 3+4?\nFirst add 3 and 4.",
        "Q: What is 3+4?\nFirst add 3 and 4. That gives 7.",
    ]
    assert row["soft_labels"] == [0.0, 0.0, 1.0]  # RolloutPolicy: no "ok" step, no correct rollout
    with pytest.raises(ValueError, match="step_cut: 'clause' is not one of"):
        LabelConfig(step_cut="clause")
    with pytest.raises(ValueError, match="dtype: .* is not one of"):
        LabelConfig(dtype="foo")


def test_binary_search_finds_the_first_wrong_step_with_fewer_rollouts(tmp_path):
    steps = ["ok3", "ok1", "bad", "ok2", "The answer is 8"]  # right until "bad" (monotone after it: "ok2" is moot)
    data = run_dir(tmp_path, {"What is 3+4?": [(steps, False), (["ok2", "ok1", "The answer is 7"], True)]})
    gold = {"What is 3+4?": "7"}
    mc_policy, binary_policy = RolloutPolicy(gold), RolloutPolicy(gold)
    mc = label(LabelConfig(dataset=str(data), rollouts=K, output_dir=str(tmp_path / "mc")), policy=mc_policy)
    stats = label(
        LabelConfig(dataset=str(data), rollouts=K, method="binary", output_dir=str(tmp_path / "bin")),
        policy=binary_policy,
    )
    rows = {r["id"]: r for r in Journal(tmp_path / "bin" / "rows.jsonl").read()}
    wrong, right = rows["p0#0"], rows["p0#1"]
    assert wrong["labels"] == [True, True, False, False, False]  # first wrong step: "bad"
    assert wrong["support"][2] == K and wrong["soft_labels"][2] == 0.0 and wrong["support"][0] == 0  # probed / inferred
    assert right["labels"] == [True, True, True] and right["soft_labels"] == [1.0, 1.0, 1.0]  # no rollout needed
    assert len(binary_policy.prompts) == 2 < len(mc_policy.prompts) == 6  # log2 probes vs one per step
    assert stats["rollouts_per_labelled_step"] == 2 * K / 8 < mc["rollouts_per_labelled_step"] == 6 * K / 8


def test_from_trees_is_method_trees():
    from synth.config import parse_cli

    assert parse_cli(LabelConfig, ["--from_trees"]).method == "trees"
    assert parse_cli(LabelConfig, ["--from_trees", "false"]).method == "mc"
    with pytest.raises(ConfigError, match="contradicts method 'binary'"):
        parse_cli(LabelConfig, ["--from_trees", "--method", "binary"])
