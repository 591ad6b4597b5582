"""Self-improvement rounds: held-out accuracy per round and wall time per stage.

    python bench/rounds.py [--config configs/rounds-smollm2.yaml] [--output_dir DIR] [--rounds K] [--fresh]
    python bench/rounds.py --tiny        # plumbing check in ~2 min: tiny random model, fake verification

Runs `synth rounds` on the recipe (resuming a run already in output_dir) and prints the per-round
table (greedy accuracy, maj@N, pass@N, search accuracy, tokens, seconds per stage), the held-out
greedy accuracy delta of round 1 and of the last round vs round 0, and the total time per stage.
--tiny swaps in a 2-layer random Llama with the bundled tokenizer, 4-problem pools, and a verifier
that accepts every other answer: its numbers mean nothing, it only exercises every stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.config import ConfigError, from_dict, load_yaml  # noqa: E402
from synth.train.report import STAGES, pools_table, table  # noqa: E402
from synth.train.rounds import RoundsConfig, run_dir, run_rounds  # noqa: E402


def tiny_model(out: Path) -> str:
    """A random 2-layer Llama with SmolLM2's tokenizer; every 5th token id ends a completion."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from synth.models import bundled_gguf

    gguf = bundled_gguf("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=1024,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    model.generation_config.eos_token_id = [tok.eos_token_id] + list(range(5, len(tok), 5))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def fake_verification() -> None:
    """Random text has no answers: every completion answers '7' and every other one is 'verified'."""
    import synth.generate.run as run
    import synth.generate.search as search
    import synth.prm.label as label

    alternate = lambda answers, problems: [i % 2 == 0 for i in range(len(answers))]  # noqa: E731
    search.extract_answer = label.extract_answer = lambda text: "7"
    run.verify_answers = label.verify_answers = alternate


def tiny_config(base: dict, model: str, out: str) -> dict:
    gen = base.get("generate", {})
    small = {
        "model": model,
        "output_dir": out,
        "top_k": 2,
        "eval_n": 2,
        "generate": {
            **gen,
            "batch_size": 16,
            "problems_per_batch": 4,
            "search": {**gen.get("search", {}), "n": 4, "max_tokens": 12, "temperature": 1.0},
        },
    }
    for pool in ("train_pool", "eval_pool"):
        if pool in base:
            small[pool] = {**base[pool], "num_problems": 4}
    if "eval_pools" in base:
        small["eval_pools"] = {name: {**p, "num_problems": 4} for name, p in base["eval_pools"].items()}
    small["sft"] = {
        **base.get("sft", {}),
        "learning_rate": 1e-2,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 2,
        "logging_steps": 1,
        "save_steps": 1000,
    }
    return {**base, **small}


def clear(cfg: RoundsConfig) -> None:
    """--fresh: clear a rounds run dir as `--overwrite` clears a generate run: only a dir synth made, only
    the entries rounds writes (a foreign file makes it refuse, naming the file)."""
    rd = run_dir(cfg)
    rd.overwrite = True
    with rd.check().claim():
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/rounds-smollm2.yaml")
    ap.add_argument("--output_dir", default=None, help="default: the recipe's (a temp dir with --tiny)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument(
        "--fresh", action="store_true", help="clear output_dir (a rounds run synth made) instead of continuing it"
    )
    ap.add_argument("--tiny", action="store_true", help="plumbing check with a tiny random model (fake verification)")
    args = ap.parse_args()

    data = load_yaml(args.config)
    if args.tiny:
        tmp = Path(tempfile.mkdtemp(prefix="synth-bench-rounds-"))
        data = tiny_config(data, tiny_model(tmp / "tiny-model"), str(tmp / "rounds"))
        fake_verification()
    if args.output_dir:
        data["output_dir"] = args.output_dir
    if args.rounds is not None:
        data["rounds"] = args.rounds
    cfg = from_dict(RoundsConfig, data)
    started = time.perf_counter()
    try:
        if args.fresh:
            clear(cfg)
        rows = run_rounds(cfg)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    wall = time.perf_counter() - started

    held = ", ".join(f"{name}: {p.num_problems} (seed {p.seed})" for name, p in cfg.pools.items())
    print(
        f"\n{cfg.rounds} rounds of {'a tiny random model (FAKE verification)' if args.tiny else cfg.model} "
        f"({'from base' if cfg.from_base else 'continued'}), {cfg.train_pool.num_problems} training problems "
        f"(seed {cfg.train_pool.seed}) at N={cfg.search.n}; held out: {held}\n"
    )
    print(table(rows))
    if len(cfg.pools) > 1:
        print(f"\nevery eval pool (greedy, paired gain over round 0 ± SE, search):\n\n{pools_table(rows)}")
        selected = json.loads((Path(cfg.output_dir) / "selected.json").read_text())
        print(f"\noutput policy (select_round {cfg.select_round}): round {selected['round']}, {selected['policy']}")
    base = rows[0]["greedy"]
    for r in rows[1:2] + rows[2:][-1:]:
        print(
            f"\nheld-out greedy accuracy, round {r['round']} - round 0: {r['greedy'] - base:+.3f} "
            f"({base:.3f} -> {r['greedy']:.3f})",
            end="",
        )
    print("\n\nseconds per stage, all rounds:")
    for stage in STAGES:
        total = sum(r["wall_s"].get(stage, 0.0) for r in rows)
        if total:
            print(f"  {stage:12s} {total:8.1f}")
    print(
        f"  {'total':12s} {sum(sum(r['wall_s'].values()) for r in rows):8.1f}   (this invocation: {wall:.1f}s; "
        "stages finished by an earlier invocation keep their own time)"
    )
    print(f"\nreport: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    main()
