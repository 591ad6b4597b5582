"""End to end on the real bundled SmolLM2 (a few problems). Marked slow."""

import json

import pytest
from datasets import load_dataset

from synth.cli import main

pytestmark = pytest.mark.slow


def test_quickstart_on_real_model(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(["generate", "--config", "configs/quickstart.yaml", "--output_dir", str(out),
               "--pool.num_problems", "4", "--search.n", "4", "--search.max_tokens", "64"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "maj@4" in printed and "pass@4" in printed
    ds = load_dataset(str(out), split="train")
    assert len(ds) == 4 and all(len(r["completions"]) == 4 for r in ds)
    assert all(any(c.strip() for c in r["completions"]) for r in ds)  # the real model wrote text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 4 and summary["tokens"] > 0
