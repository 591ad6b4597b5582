import json

import pytest
from datasets import load_dataset
from fakes import AnswerPolicy

from synth.config import ConfigError
from synth.generate.run import GenerateConfig, generate
from synth.generate.search import SearchConfig, best_of_n
from synth.problems import PoolConfig, load_pool
from synth.steps import StepRule


def make_cfg(tmp_path, **kw):
    pool = PoolConfig(source="reasoning_gym", tasks=["basic_arithmetic"], num_problems=6, seed=3)
    return GenerateConfig(
        output_dir=str(tmp_path / "run"), problems_per_batch=2, pool=pool, search=SearchConfig(n=4), **kw
    )


def policy_for(cfg, **kw):
    return AnswerPolicy({p.problem: p.answer for p in load_pool(cfg.pool)}, **kw)


def test_bad_policy_dtype_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="dtype: .* is not one of"):
        make_cfg(tmp_path, dtype="foo")


def test_delimiter_steps():
    assert StepRule("delimiter", "\n\n").steps("a\n\n\n\nb\n\n c \n\n") == ["a", "b", "c"]


def test_sentence_steps_spell_the_completion_back():
    text = "To add 3.5 and 2, we sum them. Is it 5.5? Yes!\n\nSo the answer is \\boxed{5.5}.  \n"
    rule = StepRule("sentence")
    pairs = rule.cut_text(text)
    assert pairs == [
        ("", "To add 3.5 and 2, we sum them."),
        (" ", "Is it 5.5?"),
        (" ", "Yes!"),
        ("\n\n", "So the answer is \\boxed{5.5}."),
    ]
    assert rule.completion(pairs) == text.strip()
    # a prefix never ends in whitespace: the model writes the space before the next word itself
    assert rule.prefix(pairs[:2]) == "To add 3.5 and 2, we sum them. Is it 5.5?"
    assert rule.steps("no full stop here") == ["no full stop here"] and rule.steps(" \n") == []
    with pytest.raises(ValueError, match="step cut"):
        StepRule("clause")


def test_best_of_n_traces():
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic"], num_problems=2, seed=1))
    pol = AnswerPolicy({p.problem: p.answer for p in problems}, correct=(0, 1))
    results = best_of_n(pol, problems, SearchConfig(n=3), seed=0)
    assert [len(r.traces) for r in results] == [3, 3]
    assert results[0].cost.generated_tokens == 10 + 11 + 12
    t = results[0].traces[0]
    assert t.answer == problems[0].answer and t.steps[0] == "Let us compute." and len(t.steps) == 3


def test_generate_writes_dataset_and_metrics(tmp_path):
    cfg = make_cfg(tmp_path)
    summary = generate(cfg, policy=policy_for(cfg, correct=(0, 1)))
    # 2 of 4 samples correct; wrong answers agree too (2 vs 2): ties go to the earliest -> correct
    assert summary["problems"] == 6 and summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@4"] == 1.0 and summary["maj@4"] == 1.0
    ds = load_dataset(cfg.output_dir, split="train")
    assert len(ds) == 6 and ds[0]["verified"] == [True, True, False, False]
    assert ds[0]["answers"][0] == ds[0]["gold_answer"]
    assert json.loads(ds[0]["metadata"])["reasoning_gym"]["dataset"] == "basic_arithmetic"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "configs:" in card and "maj@4" in card


def test_interrupt_then_resume_loses_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, policy=policy_for(cfg, interrupt_after=2))  # 2 batches of 2 problems saved
    lines = (tmp_path / "run" / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 4
    with pytest.raises(ConfigError, match="--resume"):
        generate(cfg, policy=policy_for(cfg))
    cfg.resume = True
    pol = policy_for(cfg)
    summary = generate(cfg, policy=pol)
    assert summary["problems"] == 6
    assert len(pol.prompts_seen) == 2  # only the unfinished problems were generated again
    assert len(load_dataset(cfg.output_dir, split="train")) == 6


def test_resume_with_changed_config_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    generate(cfg, policy=policy_for(cfg))
    cfg2 = make_cfg(tmp_path, resume=True)
    cfg2.search.n = 8
    with pytest.raises(ConfigError, match=r"made with another config: search.n \(4 -> 8\)"):
        generate(cfg2, policy=policy_for(cfg2))


def test_resume_of_a_run_saved_before_a_field_existed(tmp_path):
    """A config.yaml written by an older synth (without a field added since) still resumes."""
    import yaml

    cfg = make_cfg(tmp_path)
    generate(cfg, policy=policy_for(cfg))
    saved = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["prm_dtype"], old["push_to_hub"]
    saved.write_text(yaml.safe_dump(old))
    cfg.resume = True
    assert generate(cfg, policy=policy_for(cfg))["problems"] == 6


def test_a_prm_trained_on_other_steps_is_flagged(tmp_path, caplog):
    class SentencePRM:  # stands in for `--prm default-sentence`
        step_cut = "sentence"

        def score(self, problems, steps):
            return [[0.5] * len(s) for s in steps]

    cfg = make_cfg(tmp_path, prm="x")
    with caplog.at_level("WARNING"):
        generate(cfg, policy=policy_for(cfg), prm=SentencePRM())
    assert "trained on sentence steps but search.step_cut is delimiter" in caplog.text
    caplog.clear()
    cfg = make_cfg(tmp_path / "b", prm="x")
    cfg.search.step_cut = "sentence"
    with caplog.at_level("WARNING"):
        generate(cfg, policy=policy_for(cfg), prm=SentencePRM())
    assert "trained on" not in caplog.text
