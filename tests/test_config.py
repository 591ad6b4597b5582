from dataclasses import dataclass, field
from typing import Literal

import pytest

from synth.config import ConfigError, check_fields, from_dict, parse_cli, to_dict


@dataclass
class Inner:
    n: int = field(default=4, metadata={"help": "samples", "range": "[1, inf)"})
    names: list[str] = field(default_factory=lambda: ["a"])
    p: float = field(default=1.0, metadata={"range": "(0, 1]"})
    knobs: dict = field(default_factory=dict)

    def __post_init__(self):
        check_fields(self)


@dataclass
class Outer:
    model: str = "m"
    mode: Literal["x", "y"] = "x"
    flag: bool = False
    rate: float | None = None
    inner: Inner = field(default_factory=Inner)


def parse(argv):
    return parse_cli(Outer, argv)


def test_yaml_then_cli_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: base\ninner:\n  n: 8\n  names: [p, q]\n")
    cfg = parse(["--config", str(recipe), "--inner.n", "16", "--flag", "true", "--rate", "0.5"])
    assert cfg.model == "base" and cfg.inner.n == 16 and cfg.inner.names == ["p", "q"]
    assert cfg.flag is True and cfg.rate == 0.5


def test_unknown_key_names_it_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.nn' \(did you mean 'inner.n'\?\)"):
        from_dict(Outer, {"inner": {"nn": 3}})


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="inner.n: cannot read 'abc' as an integer"):
        from_dict(Outer, {"inner": {"n": "abc"}})
    with pytest.raises(ConfigError, match="mode"):
        from_dict(Outer, {"mode": "z"})
    with pytest.raises(ConfigError, match="flag"):
        from_dict(Outer, {"flag": "maybe"})


def test_missing_and_invalid_recipe(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse(["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse(["--config", str(bad)])


def test_cli_list_values():
    assert parse(["--inner.names", "a,b,c"]).inner.names == ["a", "b", "c"]
    assert parse(["--inner.names", "[x, y]"]).inner.names == ["x", "y"]
    assert parse(["--inner.names", "p", "q"]).inner.names == ["p", "q"]  # `synth eval --runs a b c`
    assert parse(["--inner.names", "p"]).inner.names == ["p"]


SHIPPED_RECIPES = {
    "quickstart.yaml": "generate",
    "prm-smollm2-generate.yaml": "generate",
    "prm-smollm2-label.yaml": "label",
    "prm-smollm2-generate-more.yaml": "generate",
    "prm-smollm2-label-final.yaml": "label",
    "prm-smollm2-label-sentence.yaml": "label",
    "prm-smollm2-label-sentence-more.yaml": "label",
    "prm-smollm2.yaml": "train-prm",
    "rounds-smollm2.yaml": "rounds",
    "rounds-smollm2-256.yaml": "rounds",
    "rounds-smollm2-broad.yaml": "rounds",
    "prm-smollm2-broad-label.yaml": "label",
    "prm-smollm2-broad.yaml": "train-prm",
}


def test_shipped_recipes_parse():
    import importlib
    from pathlib import Path

    from synth.commands.cli import COMMANDS
    from synth.config import load_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    assert {p.name for p in root.glob("*.yaml")} == set(SHIPPED_RECIPES), "add new recipes to SHIPPED_RECIPES"
    for recipe, command in SHIPPED_RECIPES.items():
        from_dict(importlib.import_module(COMMANDS[command][0]).Config, load_yaml(root / recipe))


def test_numbers_are_exact_finite_and_in_range():
    with pytest.raises(ConfigError, match="inner.n must be a whole number, got 2.7"):
        from_dict(Outer, {"inner": {"n": 2.7}})
    assert from_dict(Outer, {"inner": {"n": 3.0}}).inner.n == 3
    with pytest.raises(ConfigError, match="rate must be a finite number"):
        from_dict(Outer, {"rate": float("inf")})
    with pytest.raises(ConfigError, match="rate must be a finite number"):
        parse(["--rate", "nan"])
    with pytest.raises(ConfigError, match=r"^inner.n must be >= 1, got -3$"):
        parse(["--inner.n", "-3"])
    with pytest.raises(ConfigError, match=r"inner.p must be in \(0, 1\], got 5.0"):
        parse(["--inner.p", "5"])


def test_cli_spellings_bare_booleans_and_negation():
    assert parse(["--flag"]).flag is True
    assert parse(["--flag", "--no_flag"]).flag is False
    assert parse(["--no-flag"]).flag is False
    assert parse(["--inner-n", "6"]).inner.n == 6 and parse(["--inner.n=7"]).inner.n == 7
    with pytest.raises(ConfigError, match=r"unknown option '--inner.nn' \(did you mean '--inner.n'\?\)"):
        parse(["--inner.nn", "4"])
    with pytest.raises(ConfigError, match="unknown option '--mod'"):  # no abbreviations
        parse(["--mod", "y"])
    with pytest.raises(ConfigError, match="only a boolean option can be negated"):
        parse(["--no_model"])
    with pytest.raises(ConfigError, match="--inner.names: not valid YAML"):
        parse(["--inner.names", "[a, b"])


def test_cli_dicts_merge_into_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("inner:\n  knobs: {a: {x: 1, y: 2}, b: {z: 3}}\n")
    cfg = parse(["--config", str(recipe), "--inner.knobs", "{a: {y: 5}}"])
    assert cfg.inner.knobs == {"a": {"x": 1, "y": 5}, "b": {"z": 3}}
    with pytest.raises(ConfigError, match="not a file"):
        parse(["--config", str(tmp_path)])


@dataclass
class Passing:
    lora: bool = False
    args: dict = field(default_factory=dict, metadata={"passthrough": "transformers:TrainingArguments"})
    RENAMED = {"epochs": "num_train_epochs"}


def test_passthrough_fields_and_renamed_keys():
    cfg = from_dict(Passing, {"lora": True, "lr_scheduler_type": "linear", "epochs": 3, "warmup_steps": "0.1"})
    assert cfg.args == {"lr_scheduler_type": "linear", "num_train_epochs": 3.0, "warmup_steps": 0.1}
    assert to_dict(cfg) == {"lora": True, "lr_scheduler_type": "linear", "num_train_epochs": 3.0, "warmup_steps": 0.1}
    assert from_dict(Passing, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown config key 'learning_rat' .*did you mean.*TrainingArguments"):
        from_dict(Passing, {"learning_rat": 1})
    assert parse_cli(Passing, ["--learning-rate", "1e-4", "--epochs", "2"]).args == {
        "learning_rate": 1e-4,
        "num_train_epochs": 2.0,
    }
