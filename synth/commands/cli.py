"""The `synth` command. Each subcommand is a module of `synth.commands` exposing `Config` (a dataclass)
and `main(cfg)`; options follow TrlParser / HfArgumentParser conventions (`--flag`, `--no_flag`, dashes
or underscores, a YAML recipe with `--config`)."""

from __future__ import annotations

import errno
import importlib
import logging
import sys

from synth.config import ConfigError, format_help, parse_cli

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": (
        "synth.commands.generate",
        "Search over a problem pool with the policy and write a dataset of verified traces.",
    ),
    "merge": (
        "synth.commands.merge",
        "Join the output dirs of sharded generate or label runs (--shard i/n) into one run.",
    ),
    "filter": (
        "synth.commands.filter",
        "Filter generated traces into training data (SFT, stepwise PRM or preference) and optionally push it.",
    ),
    "push": (
        "synth.commands.push",
        "Publish a local dataset dir to the Hugging Face Hub (a config per folder, branches as revisions).",
    ),
    "eval": (
        "synth.commands.eval",
        "Accuracy vs N of generate runs (maj/naive/weighted/pass@n), a plot, and the compute-optimal mix.",
    ),
    "label": (
        "synth.commands.label",
        "Label the steps of generated traces with Monte-Carlo rollouts (stepwise PRM dataset).",
    ),
    "train-prm": (
        "synth.commands.train_prm",
        "Train a process reward model on a stepwise dataset (transformers Trainer, LoRA or full).",
    ),
    "eval-prm": (
        "synth.commands.eval_prm",
        "Evaluate a PRM: step AUROC, and first-error F1 when the dataset has a `label` column.",
    ),
    "train": (
        "synth.commands.train",
        "Fine-tune the policy on verified traces (TRL SFT, completion-only loss; full or LoRA, merged).",
    ),
    "rounds": (
        "synth.commands.rounds",
        "Self-improvement rounds: generate -> filter -> SFT (-> PRM) -> held-out eval, resumable.",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: synth COMMAND [--config RECIPE.yaml] [--option value ...]",
        "",
        "Turn test-time compute into training data.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {helptext}" for name, (_, helptext) in COMMANDS.items()]
    lines += ["", "`synth COMMAND --help` lists a command's options; `synth --version` prints the version."]
    return "\n".join(lines) + "\n"


def _is_our_error(err: BaseException) -> bool:
    """synth's own errors name the problem in one line (no traceback); anything else is a bug worth one."""
    return isinstance(err, (ConfigError, FileNotFoundError)) or type(err).__module__.startswith("synth")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "urllib3", "filelock", "datasets", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        import synth

        print(f"synth {synth.__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        print(
            f"synth: unknown command {name!r}"
            + (f" (did you mean '{close[0]}'?)" if close else "")
            + f"; commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(format_help(module.Config, f"synth {name}", COMMANDS[name][1]), end="")
        return 0
    try:
        return module.main(parse_cli(module.Config, argv[1:])) or 0
    except KeyboardInterrupt:
        print(f"synth {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            print(
                f"synth {name}: error: no space left on the device ({err.filename or 'writing output'}): free some "
                "space, then rerun the same command with --resume true to continue",
                file=sys.stderr,
            )
            return 1
        if not _is_our_error(err):
            raise
        print(f"synth {name}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - re-raised unless it is one of ours
        if not _is_our_error(err):
            raise
        print(f"synth {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
