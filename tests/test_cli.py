import pytest

from synth.commands.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "generate" in out and "train-prm" in out


def test_generate_help_explains_every_option(capsys):
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--pool.tasks", "--search.n", "--search.strategy", "--resume", "--prm"):
        assert opt in out


def test_unknown_key_is_a_clear_error(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("search:\n  nn: 4\n")
    assert main(["generate", "--config", str(recipe)]) == 2
    assert "unknown config key 'search.nn' (did you mean 'search.n'?)" in capsys.readouterr().err


def test_bad_pool_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "--output_dir", str(tmp_path / "o"), "--pool.tasks", "basic_arithmetc"]) == 2
    err = capsys.readouterr().err
    assert "unknown reasoning-gym task 'basic_arithmetc'" in err and "basic_arithmetic" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "no rows (is it a `synth generate` output dir?)"),
        (["--difficulty", "guess"], "difficulty: 'guess' is not one of"),
        (["--folds", "0"], "folds must be >= 1, got 0"),
    ],
)
def test_eval_bad_input_is_a_clear_error(tmp_path, capsys, extra, message):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert main(["eval", "--runs", str(empty), "--output_dir", str(tmp_path / "eval"), *extra]) == 2
    assert message in capsys.readouterr().err
