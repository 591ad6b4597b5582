"""The `synth` command. Each subcommand is a module exposing `Config` (a dataclass) and `main(cfg)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from synth.config import ConfigError, add_arguments, build_config

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("synth.generate.run", "Search over a problem pool with the policy and write a dataset of verified traces."),
    "merge": ("synth.merge", "Join the output dirs of sharded generate runs (--shard i/n) into one run."),
    "filter": ("synth.filter.run", "Filter generated traces into training data (SFT, stepwise PRM or preference) and optionally push it."),
    "push": ("synth.push", "Publish a local dataset dir to the Hugging Face Hub (a config per folder, branches as revisions)."),
    "eval": ("synth.eval_runs", "Accuracy vs N of generate runs (maj/naive/weighted/pass@n), a plot, and the compute-optimal mix."),
    "label": ("synth.prm.label", "Label the steps of generated traces with Monte-Carlo rollouts (stepwise PRM dataset)."),
    "train-prm": ("synth.prm.train", "Train a process reward model on a stepwise dataset (transformers Trainer, LoRA or full)."),
    "eval-prm": ("synth.prm.evaluate", "Evaluate a PRM: step AUROC, and first-error F1 when the dataset has a `label` column."),
    "train": ("synth.train.sft", "Fine-tune the policy on verified traces (TRL SFT, completion-only loss; full or LoRA, merged)."),
    "rounds": ("synth.train.rounds", "Self-improvement rounds: generate -> filter -> SFT (-> PRM) -> held-out eval, resumable."),
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="synth", description="Turn test-time compute into training data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, helptext) in COMMANDS.items():
        sub.add_parser(name, help=helptext, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage / the unknown-command error
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd = argparse.ArgumentParser(prog=f"synth {name}", description=COMMANDS[name][1])
    add_arguments(cmd, module.Config)
    args = cmd.parse_args(argv[1:])
    try:
        return module.main(build_config(module.Config, args)) or 0
    except KeyboardInterrupt:
        return 130
    except (ConfigError, FileNotFoundError) as err:
        cmd.exit(2, f"synth {name}: error: {err}\n")
    except ValueError as err:
        if type(err).__module__.startswith("synth"):  # our own errors name the problem: no traceback
            cmd.exit(2, f"synth {name}: error: {err}\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
