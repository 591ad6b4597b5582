"""End to end on the real bundled SmolLM2 (a few problems). Marked slow."""

import json

import pytest
from datasets import load_dataset

from synth.commands.cli import main
from synth.steps import StepRule

pytestmark = pytest.mark.slow


def test_quickstart_on_real_model(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(
        [
            "generate",
            "--config",
            "configs/quickstart.yaml",
            "--output_dir",
            str(out),
            "--pool.num_problems",
            "4",
            "--search.n",
            "4",
            "--search.max_tokens",
            "64",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "maj@4" in printed and "pass@4" in printed
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == 4 and all(len(r["completions"]) == 4 for r in ds)
    assert all(any(c.strip() for c in r["completions"]) for r in ds)  # the real model wrote text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 4 and summary["tokens"] > 0


@pytest.mark.parametrize(
    "strategy,prm,cut",
    [
        ("beam_search", "default", "delimiter"),
        ("dvts", "default", "delimiter"),
        ("dvts", "default-sentence", "sentence"),
        ("particle_filtering", "default-sentence", "sentence"),
        ("mcts", "default-sentence", "sentence"),
    ],
)
def test_search_with_default_prm_on_real_model(tmp_path, strategy, prm, cut):
    """`--prm default` (and `default-sentence` for sentence steps) works offline out of the box: the bundled
    PRM guides search on the real model."""
    out = tmp_path / strategy
    rc = main(
        [
            "generate",
            "--config",
            "configs/quickstart.yaml",
            "--output_dir",
            str(out),
            "--prm",
            prm,
            "--pool.num_problems",
            "2",
            "--search.strategy",
            strategy,
            "--search.n",
            "4",
            "--search.step_cut",
            cut,
            "--search.beam_width",
            "2",
            "--search.max_iterations",
            "3",
            "--search.step_max_tokens",
            "48",
        ]
    )
    assert rc == 0
    ds = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == 2
    for row in ds:
        assert len(row["completions"]) == 4 and row["prm_steps"] > 0
        assert all(0.0 <= s <= 1.0 for s in row["scores"] if s is not None)
        assert json.loads(row["tree"])  # the search tree is stored
        if cut == "sentence":  # a step holds at most one sentence (a long one may be cut by step_max_tokens)
            steps = [step for trace in row["steps"] for step in trace]
            assert all(StepRule("sentence").steps(step) == [step] for step in steps)
            assert any(step.endswith(".") for step in steps)
