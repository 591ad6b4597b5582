import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from synth.config import ConfigError, add_arguments, build_config, from_dict


@dataclass
class Inner:
    n: int = field(default=4, metadata={"help": "samples"})
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer:
    model: str = "m"
    mode: Literal["x", "y"] = "x"
    flag: bool = False
    rate: float | None = None
    inner: Inner = field(default_factory=Inner)


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Outer)
    return build_config(Outer, parser.parse_args(argv))


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
    with pytest.raises(ConfigError, match="inner.n: cannot read 'abc' as int"):
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


SHIPPED_RECIPES = {"quickstart.yaml": "generate", "prm-smollm2-generate.yaml": "generate", "prm-smollm2-label.yaml": "label",
                   "prm-smollm2-generate-more.yaml": "generate", "prm-smollm2-label-final.yaml": "label",
                   "prm-smollm2-label-sentence.yaml": "label", "prm-smollm2-label-sentence-more.yaml": "label",
                   "prm-smollm2.yaml": "train-prm", "rounds-smollm2.yaml": "rounds", "rounds-smollm2-256.yaml": "rounds"}


def test_shipped_recipes_parse():
    import importlib
    from pathlib import Path

    from synth.cli import COMMANDS
    from synth.config import load_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    assert {p.name for p in root.glob("*.yaml")} == set(SHIPPED_RECIPES), "add new recipes to SHIPPED_RECIPES"
    for recipe, command in SHIPPED_RECIPES.items():
        from_dict(importlib.import_module(COMMANDS[command][0]).Config, load_yaml(root / recipe))
