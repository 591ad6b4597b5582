import json
import math

import pytest
import torch
from datasets import Dataset

from synth.prm.data import StepwiseDataError, validate
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
    batch = StepCollator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [IGNORE, IGNORE, 1.0]}, {"input_ids": [5], "labels": [0.5]}])
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


@pytest.mark.parametrize("rows,msg", [
    ({"prompt": ["q"], "completions": [["a"]]}, "missing column"),
    ({"prompt": ["q"], "completions": [["a", "b"]], "labels": [[1.0]]}, "2 steps but 1 labels"),
    ({"prompt": ["q"], "completions": [["a", " "]], "labels": [[1.0, 0.0]]}, "empty step"),
    ({"prompt": ["q"], "completions": [[]], "labels": [[]]}, "no steps"),
    ({"prompt": ["q"], "completions": [["a"]], "labels": [[1.5]]}, "outside"),
])
def test_bad_stepwise_datasets(rows, msg):
    with pytest.raises(StepwiseDataError, match=msg):
        validate(Dataset.from_dict(rows))


def stepwise_rows(n=24):
    """A learnable toy task: steps that say 'right' are good, 'wrong' bad."""
    rows = []
    for i in range(n):
        good = i % 2 == 0
        rows.append({"prompt": f"What is {i}+1?", "completions": [f"{i}+1 = {i + 1} right", "The answer is right" if good else "The answer is wrong"],
                     "labels": [1.0, 1.0 if good else 0.0], "hard_labels": [1.0, 1.0 if good else 0.0]})
    return rows


def test_train_prm_end_to_end_loss_falls_and_roundtrips(tmp_path, tiny_model_dir):
    from synth.generate.search import SearchConfig, beam_search
    from synth.prm.load import load_prm
    from synth.records import Problem
    from fakes import StepPolicy

    data = tmp_path / "steps.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in stepwise_rows()))
    cfg = TrainPRMConfig(dataset=str(data), model=tiny_model_dir, output_dir=str(tmp_path / "prm"), epochs=8,
                         batch_size=8, learning_rate=3e-3, eval_fraction=0.25, save_steps=1000, lora=True)
    metrics = train_prm(cfg)
    history = json.loads((tmp_path / "prm" / "checkpoint-24" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]
    assert "step_auroc" in metrics
    # train-prm -> save -> load -> search
    prm = load_prm(str(tmp_path / "prm" / "final"))
    scores = prm.score(["q", "q"], [["a", "b"], ["c"]])
    assert [len(s) for s in scores] == [2, 1] and all(0 <= x <= 1 for s in scores for x in s)
    results = beam_search(StepPolicy(finish_depth=2), [Problem("p", "2+5?", "7", "t")],
                          SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=3), seed=0, prm=prm)
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

    ds = Dataset.from_list([
        {"prompt": "q1", "problem_id": "p1", "completions": ["long good", "x"], "hard_labels": [1.0, 0.0]},
        {"prompt": "q1", "problem_id": "p1", "completions": ["bad", "right answer"], "hard_labels": [0.0, 1.0]},
        {"prompt": "q2", "problem_id": "p2", "completions": ["y"], "hard_labels": [1.0]},
    ])
    out = step_auroc(LengthPRM(), ds)
    assert out["eval_steps"] == 5
    assert out["within_problem_auroc_partial"] == 1.0 and out["within_problem_pairs_partial"] == 1  # "long good" > "bad"
    assert out["within_problem_auroc_final"] == 1.0 and out["within_problem_pairs_final"] == 1  # "right answer" > "x"
    assert out["within_problem_pairs"] == 4  # p1: 2 good x 2 bad; p2 has no bad step
