"""The import graph of synth points one way: down the layers below. A module may import its own layer
and any lower one, never a higher one (lazy imports inside functions count too); commands are never
imported by libraries."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "synth"

# Lowest first. A module takes the first layer one of whose patterns matches its dotted name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground",
        (
            "synth",
            "synth.records",
            "synth.config",
            "synth.journal",
            "synth.models",
            "synth.verify",
            "synth.steps",
            "synth.problems",
            "synth.rundir",
            "synth.hub",
            "synth.cards",
            "synth.launch",
            "synth.evaluate",
            "synth.formats",
            "synth.*.__init__",
        ),
    ),
    (
        "engines",
        (
            "synth.generate.engine",
            "synth.generate.hf",
            "synth.generate.vllm",
            "synth.generate.kv_stash",
            "synth.generate.token_memo",
            "synth.generate.reserved_cache",
            "synth.generate.packed_linear",
            "synth.generate.shared_prefix",
            "synth.generate.gqa_sdpa",
            "synth.generate.openai_engine",
            "synth.generate.overlap",
            "synth.prm.scorer",
            "synth.prm.token_cls",
            "synth.prm.load",
            "synth.prm.format",
            "synth.prm.prefix",
            "synth.prm.plus_minus",
            "synth.prm.qwen",
            "synth.prm.vllm_prm",
            "synth.prm.package",
        ),
    ),
    (
        "search",
        (
            "synth.generate.search",
            "synth.generate.tree",
            "synth.generate.particles",
            "synth.generate.mcts",
            "synth.prm.rescore",
        ),
    ),
    (
        "stages",
        (
            "synth.generate.run",
            "synth.prm.label",
            "synth.prm.tree_labels",
            "synth.prm.train",
            "synth.prm.evaluate",
            "synth.prm.data",
            "synth.filter.*",
            "synth.train.sft",
            "synth.train.data",
            "synth.merge",
            "synth.eval_runs",
        ),
    ),
    ("pipelines", ("synth.train.rounds", "synth.train.stages", "synth.train.report")),
    ("commands", ("synth.commands.*", "synth.__main__")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    name = ".".join(rel.parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") and name.count(".") == 1 else name


def layer_of(name: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py")


def imports(path: Path) -> set[str]:
    """Every synth module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("synth")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synth") and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"  # `from synth import verify` imports the module synth.verify
                out.add(sub if (ROOT.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
    return out


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        layer_of(module_name(path))


def test_imports_only_point_down():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        here = layer_of(name)
        for target in sorted(imports(path)):
            if layer_of(target) > here:
                upward.append(f"{name} ({LAYERS[here][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "synth" / "records.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from synth.commands.cli import main\n")
    assert imports(bad) == {"synth.commands.cli"} and layer_of("synth.commands.cli") > layer_of("synth.records")
