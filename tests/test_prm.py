import json
import math

import pytest
import torch
from datasets import Dataset

from synth.formats import FormatError, validate
from synth.prm.format import encode_steps
from synth.prm.scorer import aggregate
from synth.prm.train import IGNORE, StepCollator, TrainPRMConfig, step_loss, tokenize_row, train_prm


def test_label_positions_are_exact(tokenizer):
    """The label of step k sits on the last token of the separator that follows step k."""
    enc = encode_steps(tokenizer, "What is 2+3?", ["2+3 = 5", "The answer is 5."], "\n\n")
    sep = tokenizer.encode("\n\n", add_special_tokens=False)
    assert len(enc.label_positions) == 2
    for pos in enc.label_positions:
        assert enc.input_ids[pos - len(sep) + 1 : pos + 1] == sep
    # the text up to each position is the problem plus exactly the steps so far
    upto = tokenizer.decode(enc.input_ids[: enc.label_positions[0] + 1], skip_special_tokens=True)
    assert upto == "What is 2+3?\n\n2+3 = 5\n\n"
    assert enc.label_positions[-1] == len(enc.input_ids) - 1


def test_tokenize_row_puts_labels_only_at_step_ends(tokenizer):
    row = {"prompt": "1+1?", "completions": ["1+1 is 2", "so 2"], "labels": [0.75, 0.0]}
    out = tokenize_row(tokenizer, row, "\n\n", 128)
    labelled = [(i, v) for i, v in enumerate(out["labels"]) if v != IGNORE]
    enc = encode_steps(tokenizer, row["prompt"], row["completions"], "\n\n")
    assert labelled == [(enc.label_positions[0], 0.75), (enc.label_positions[1], 0.0)]


def test_truncation_drops_steps_not_positions(tokenizer):
    enc = encode_steps(tokenizer, "q", ["a " * 50, "b"], "\n\n", max_length=20)
    assert enc.label_positions == [] and len(enc.input_ids) <= 20


def test_soft_label_loss_is_bce_not_rounded():
    logits = torch.zeros(1, 3, 1)
    labels = torch.tensor([[IGNORE, 0.25, IGNORE]])
    # BCE(sigmoid(0)=0.5, 0.25) = ln 2, whatever the target: it must not round 0.25 to 0
    assert step_loss(logits, labels).item() == pytest.approx(0.6931, abs=1e-4)
    logits = torch.tensor([[[0.0], [3.0], [0.0]]])
    soft = step_loss(logits, torch.tensor([[IGNORE, 0.75, IGNORE]]))
    hard = step_loss(logits, torch.tensor([[IGNORE, 1.0, IGNORE]]))
    assert soft.item() != pytest.approx(hard.item())


def test_collator_pads_right_and_ignores_padding():
    batch = StepCollator(pad_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE, IGNORE, 1.0]}, {"input_ids": [5], "labels": [0.5]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"][1].tolist() == [0.5, IGNORE, IGNORE]


def test_aggregations():
    assert aggregate([0.5, 0.8], "last") == 0.8
    assert aggregate([0.5, 0.8], "min") == 0.5
    assert aggregate([0.5, 0.8], "prod") == pytest.approx(0.4)
    assert aggregate([0.5, 0.8], "mean") == pytest.approx(0.65)
    with pytest.raises(ValueError):
        aggregate([0.5], "max")


@pytest.mark.parametrize(
    "rows,msg",
    [
        ({"prompt": ["q"], "completions": [["a"]]}, "missing column"),
        ({"prompt": ["q"], "completions": [["a", "b"]], "labels": [[1.0]]}, "2 steps but 1 labels"),
        ({"prompt": ["q"], "completions": [["a", " "]], "labels": [[1.0, 0.0]]}, "empty step"),
        ({"prompt": ["q"], "completions": [[]], "labels": [[]]}, "no steps"),
        ({"prompt": ["q"], "completions": [["a"]], "labels": [[1.5]]}, "outside"),
    ],
)
def test_bad_stepwise_datasets(rows, msg):
    with pytest.raises(FormatError, match=msg):
        validate(Dataset.from_dict(rows), "stepwise")


def stepwise_rows(n=24):
    """A learnable toy task: steps that say 'right' are good, 'wrong' bad."""
    rows = []
    for i in range(n):
        good = i % 2 == 0
        rows.append(
            {
                "prompt": f"What is {i}+1?",
                "completions": [f"{i}+1 = {i + 1} right", "The answer is right" if good else "The answer is wrong"],
                "labels": [1.0, 1.0 if good else 0.0],
                "hard_labels": [1.0, 1.0 if good else 0.0],
            }
        )
    return rows


def test_train_prm_end_to_end_loss_falls_and_roundtrips(tmp_path, tiny_model_dir):
    from fakes import StepPolicy

    from synth.generate.search import SearchConfig, beam_search
    from synth.prm.load import load_prm
    from synth.records import Problem

    data = tmp_path / "steps.jsonl"
    data.write_text("\n".join(json.dumps({**r, "step_cut": "sentence"}) for r in stepwise_rows()))
    cfg = TrainPRMConfig(
        dataset=str(data),
        model=tiny_model_dir,
        output_dir=str(tmp_path / "prm"),
        eval_fraction=0.25,
        lora=True,
        args={"num_train_epochs": 8, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "save_steps": 1000},
    )
    metrics = train_prm(cfg)
    history = json.loads((tmp_path / "prm" / "checkpoint-24" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]
    assert "step_auroc" in metrics
    # train-prm -> save -> load -> search
    prm = load_prm(str(tmp_path / "prm" / "final"))
    scores = prm.score(["q", "q"], [["a", "b"], ["c"]])
    assert [len(s) for s in scores] == [2, 1] and all(0 <= x <= 1 for s in scores for x in s)
    assert prm.step_cut == "sentence"  # the labels' step cut travels with the PRM (search warns on a mismatch)
    results = beam_search(
        StepPolicy(finish_depth=2),
        [Problem("p", "2+5?", "7", "t")],
        SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=3),
        seed=0,
        prm=prm,
    )
    assert len(results[0].traces) == 4


def test_within_problem_auroc_ignores_difficulty():
    from synth.prm.evaluate import within_group_auroc

    # The PRM scores problem "easy" high and "hard" low: pooled it looks good, within problems it is a coin flip.
    groups = ["easy"] * 4 + ["hard"] * 4
    scores = [0.9, 0.8, 0.9, 0.8, 0.2, 0.1, 0.2, 0.1]
    truths = [True, True, False, False, False, False, True, False]
    auc, pairs = within_group_auroc(groups, scores, truths)
    assert pairs == 2 * 2 + 1 * 3
    # easy: (0.9 vs 0.9 tie, 0.9>0.8, 0.8<0.9, 0.8 tie) = 2 of 4; hard: 0.2 vs (0.2 tie, 0.1, 0.1) = 2.5 of 3
    assert auc == (2 + 2.5) / 7
    auc, pairs = within_group_auroc(["a", "b"], [0.1, 0.9], [True, False])  # no problem has both kinds
    assert pairs == 0 and math.isnan(auc)


def test_step_auroc_reports_partial_and_final_steps_within_problems():
    from datasets import Dataset

    from synth.prm.evaluate import step_auroc

    class LengthPRM:  # longer step text = higher score
        def score(self, problems, steps):
            return [[len(s) / 10 for s in path] for path in steps]

    ds = Dataset.from_list(
        [
            {"prompt": "q1", "problem_id": "p1", "completions": ["long good", "x"], "hard_labels": [1.0, 0.0]},
            {"prompt": "q1", "problem_id": "p1", "completions": ["bad", "right answer"], "hard_labels": [0.0, 1.0]},
            {"prompt": "q2", "problem_id": "p2", "completions": ["y"], "hard_labels": [1.0]},
        ]
    )
    out = step_auroc(LengthPRM(), ds)
    assert out["eval_steps"] == 5
    assert (
        out["within_problem_auroc_partial"] == 1.0 and out["within_problem_pairs_partial"] == 1
    )  # "long good" > "bad"
    assert out["within_problem_auroc_final"] == 1.0 and out["within_problem_pairs_final"] == 1  # "right answer" > "x"
    assert out["within_problem_pairs"] == 4  # p1: 2 good x 2 bad; p2 has no bad step


def test_step_auroc_per_family():
    from datasets import Dataset

    from synth.prm.evaluate import step_auroc

    class LengthPRM:
        def score(self, problems, steps):
            return [[len(x) / 100 for x in s] for s in steps]

    rows = [
        {
            "prompt": "q1",
            "problem_id": "a1",
            "source": "reasoning_gym/chain_sum",
            "completions": ["long good", "x"],
            "labels": [True, False],
        },
        {
            "prompt": "q2",
            "problem_id": "b1",
            "source": "reasoning_gym/gcd",
            "completions": ["no", "a long bad step"],
            "labels": [True, False],
        },
    ]
    out = step_auroc(LengthPRM(), Dataset.from_list(rows))
    assert set(out["families"]) == {"chain_sum", "gcd"}
    assert out["families"]["chain_sum"]["step_auroc"] == 1.0 and out["families"]["gcd"]["step_auroc"] == 0.0
    assert out["families"]["gcd"]["eval_steps"] == 2 and out["step_auroc"] == 0.5
    assert "families" not in step_auroc(LengthPRM(), Dataset.from_list(rows[:1]))


def test_several_stepwise_datasets_concatenate_and_drop_repeated_traces(tmp_path):
    from synth.prm.data import load_stepwise_many

    rows = stepwise_rows(6)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(r) for r in rows[:4]))
    # b repeats rows 2-3 (same prompt and steps), adds 4-5, and lacks the hard_labels column
    b.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "hard_labels"}) for r in rows[2:]))
    ds = load_stepwise_many([str(a), str(b)])
    assert ds["prompt"] == [r["prompt"] for r in rows]
    assert "hard_labels" not in ds.column_names  # every part in one layout: boolean labels, float soft_labels
    assert ds["soft_labels"] == [r["labels"] for r in rows] and ds["labels"] == [
        [x >= 0.5 for x in r["labels"]] for r in rows
    ]
    assert len(load_stepwise_many([str(a)])) == 4
    # bool labels (TRL's Math-Shepherd style) combine with float ones
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"prompt": "new?", "completions": ["x"], "labels": [True]}))
    both = load_stepwise_many([str(a), str(c)])
    assert both["labels"][-1] == [True] and both["soft_labels"][-1] == [1.0]
    with pytest.raises(FormatError, match="not found"):
        load_stepwise_many([str(a), str(tmp_path / "missing.jsonl")])
    assert TrainPRMConfig(dataset=str(a)).dataset == [str(a)]
    with pytest.raises(ValueError, match="dtype"):
        TrainPRMConfig(dataset=str(a), dtype="int8")


def test_pairwise_loss_ranks_right_over_wrong_within_a_problem_only():
    from synth.prm.train import pairwise_loss

    # 4 traces: problem 0 has a right (row 0) and a wrong (row 1) one; problem 1 only wrong ones (rows 2, 3).
    labels = torch.full((4, 5), IGNORE)
    labels[0, 2], labels[0, 4] = 0.5, 1.0  # two steps: the final one at position 4
    labels[1, 3], labels[2, 1], labels[3, 4] = 0.0, 0.0, 0.0
    logits = torch.zeros(4, 5, 1)
    logits[0, 4, 0], logits[1, 3, 0] = 2.0, 0.5  # only the last labelled position of each row counts
    logits[0, 2, 0] = -9.0
    group, final = torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss = pairwise_loss(logits, labels, group, final)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-(2.0 - 0.5))))
    # the same scores across problems make no pair; a truncated trace (final -1) is never paired
    assert pairwise_loss(logits, labels, torch.tensor([0, 1, 2, 3]), final) is None
    assert pairwise_loss(logits, labels, group, torch.tensor([-1.0, 0.0, 0.0, 0.0])) is None


def test_grouped_order_keeps_each_problems_traces_together():
    from synth.prm.train import grouped_order

    prompts = ["a", "b", "a", "c", "b", "a"]
    order = grouped_order(prompts, seed=0)
    assert sorted(order) == list(range(6))
    runs = [prompts[i] for i in order]
    assert len([p for k, p in enumerate(runs) if k == 0 or runs[k - 1] != p]) == 3  # one run per problem


def test_train_prm_with_a_pairwise_loss_runs_and_scores(tmp_path, tiny_model_dir):
    from synth.prm.load import load_prm

    data = tmp_path / "steps.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in stepwise_rows(8)))
    with pytest.raises(ValueError, match="pairwise_weight"):
        TrainPRMConfig(dataset=str(data), pairwise_weight=-1)
    # two traces per problem: a right and a wrong one, so every problem forms a pair
    rows = [dict(r, prompt=f"What is {i // 2}+1?") for i, r in enumerate(stepwise_rows(8))]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = TrainPRMConfig(
        dataset=str(data),
        model=tiny_model_dir,
        output_dir=str(tmp_path / "prm"),
        eval_fraction=0.0,
        pairwise_weight=1.0,
        args={"num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 3e-3, "save_steps": 1000},
    )
    metrics = train_prm(cfg)
    assert metrics["steps"] == 4 and math.isfinite(metrics["train_loss"])
    scores = load_prm(str(tmp_path / "prm" / "final")).score(["q"], [["a", "b"]])
    assert len(scores[0]) == 2


def test_within_problem_value_spread_removes_rollout_noise():
    from synth.prm.evaluate import within_problem_value_spread

    # p1: partial labels 0.5 and 0.5 (no spread at all); p2: 0.0 and 1.0 (no rollout noise, spread 0.707)
    rows = [
        {"problem_id": "p1", "labels": [0.5, 1.0], "rollouts": 4},
        {"problem_id": "p1", "labels": [0.5, 0.0], "rollouts": 4},
        {"problem_id": "p2", "labels": [0.0, 0.0], "rollouts": 4},
        {"problem_id": "p2", "labels": [1.0, 1.0], "rollouts": 4},
        {"problem_id": "p3", "labels": [1.0], "rollouts": 4},
    ]
    out = within_problem_value_spread(rows)
    # observed variances 0 and 0.5 -> 0.25; noise (0.25/3 for p1's two steps, 0 for p2) -> mean 0.0417
    assert out["partial_problems"] == 2 and out["partial_sd"] == pytest.approx((0.25 - 0.25 / 3 / 2) ** 0.5)
    assert out["final_problems"] == 2 and out["final_sd"] == pytest.approx(((0.5 + 0.5) / 2) ** 0.5)  # p3 has one trace
    assert within_problem_value_spread([{"problem_id": "p", "labels": [1.0], "rollouts": 4}])["partial_problems"] == 0
