"""Where a search's time goes: best-of-N and a tree search, each split into the engines' parts.

    python bench/breakdown.py [--problems 8] [--n 16] [--strategy dvts] [--step-cut sentence]
        [--prm default-sentence] [--tasks FAMILY ...] [--out runs/bench-breakdown]

Two `synth generate` runs in one batch (transformers engines, all cores; `--tasks`: those reasoning-gym
families at their own difficulty, seed 1000, else the held-out arithmetic pool): best-of-N, then the tree
search. Timers wrap the engines' methods (no profiler: its per-op cost would distort the small ops) and
charge each second to the innermost part running:

- policy: prefill (new tokens on kept KV, the prompts' KV fanned out to their samples), decode forward (one
  token for every row), sampling and stop checks (the rest of a decode step: drawing tokens, matching stop
  strings, bookkeeping), joins (waiting rows spliced into the running batch), compaction (finished rows
  dropped), stash (finished rows' KV kept for the next call)
- PRM: fresh sequences (shared prefixes within the call), sequences on kept KV, stash (scored sequences'
  KV kept), the rest of a score call (encoding steps, matching kept prefixes)
- other: the wall time outside both engines (tree bookkeeping, tokenizing, verification, writing rows)

Prints seconds and the share of the run's wall time, then decode steps, rows per step, ms per decode forward,
on how many sampled rows the stop strings were matched (a row's recent text decoded), and how many prompt
tokens the policy's prefills ran against how many they found kept. `--retokenize` encodes every prompt from
its whole text, as the engine did before it kept the tokens of the texts it kept (`token_memo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heldout import bench_pool, tree_search  # noqa: E402

from synth.generate import hf  # noqa: E402
from synth.generate.run import GenerateConfig, generate, load_policy  # noqa: E402
from synth.generate.search import SearchConfig  # noqa: E402
from synth.generate.token_memo import TokenMemo  # noqa: E402
from synth.journal import Journal  # noqa: E402
from synth.prm import token_cls  # noqa: E402
from synth.prm.load import load_prm  # noqa: E402

# (owner, method) -> part; a method called inside another's timer is charged to itself, not to its caller
PARTS = [
    (hf._Decoder, "step", "policy: sampling and stop checks"),
    (hf._Decoder, "_admit", "policy: prefill"),
    (hf._Decoder, "_stash", "policy: stash"),
    (hf._Batch, "joined", "policy: joins"),
    (hf._Batch, "select", "policy: compaction"),
    (hf.TransformersPolicy, "generate", "policy: call setup, results"),
    (token_cls.TokenClassificationPRM, "score", "PRM: encoding, matching"),
    (token_cls.TokenClassificationPRM, "_forward", "PRM: fresh sequences"),
    (token_cls.TokenClassificationPRM, "_forward_kept", "PRM: on kept KV"),
    (token_cls, "_keep", "PRM: stash"),
]
DECODE = "policy: decode forward"


class Timers:
    """Exclusive wall time per part: a stack of running parts, each second charged to the top one."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [part, started]
        self.decode_steps = 0
        self.row_steps = 0  # rows sampled in decode steps
        self.stop_decodes = 0  # of those, rows whose recent text was decoded to match stop strings
        self.prefilled = self.reused = self.prompts = 0  # prompt tokens prefills ran / found kept; prompts run

    def enter(self, part: str) -> None:
        now = time.perf_counter()
        if self.stack:
            top = self.stack[-1]
            self.seconds[top[0]] += now - top[1]
        self.stack.append([part, now])

    def leave(self) -> None:
        now = time.perf_counter()
        part, started = self.stack.pop()
        self.seconds[part] += now - started
        if self.stack:
            self.stack[-1][1] = now

    def wrap(self, fn, part: str):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.enter(part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        return timed

    def install(self, policy) -> None:
        for owner, name, part in PARTS:
            setattr(owner, name, self.wrap(getattr(owner, name), part))
        forward = policy.model.forward

        def model_forward(*args, **kwargs):  # a decode step's forward, not a prefill's
            if not self.stack or self.stack[-1][0] != PARTS[0][2]:
                return forward(*args, **kwargs)
            self.decode_steps += 1
            self.enter(DECODE)
            try:
                return forward(*args, **kwargs)
            finally:
                self.leave()

        policy.model.forward = model_forward
        sample, decode = policy._sample, policy.tokenizer.decode

        def counted_sample(logits, *args):
            self.row_steps += len(logits)
            return sample(logits, *args)

        def counted_decode(*args, **kwargs):
            self.stop_decodes += bool(self.stack) and self.stack[-1][0] == PARTS[0][2]
            return decode(*args, **kwargs)

        policy._sample, policy.tokenizer.decode = counted_sample, counted_decode
        prefill = policy._prefill

        def counted_prefill(prompt_ids, reused, *args, **kwargs):
            self.prefilled += sum(len(p) - n for p, (_, n) in zip(prompt_ids, reused))
            self.reused += sum(n for _, n in reused)
            self.prompts += len(prompt_ids)
            return prefill(prompt_ids, reused, *args, **kwargs)

        policy._prefill = counted_prefill

    def reset(self) -> None:
        self.seconds.clear()
        self.decode_steps = self.row_steps = self.stop_decodes = self.prefilled = self.reused = self.prompts = 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--strategy", default="dvts", choices=["beam_search", "dvts", "particle_filtering", "mcts"])
    ap.add_argument("--step-cut", default="sentence", choices=["delimiter", "sentence"])
    ap.add_argument("--prm", default="default-sentence")
    ap.add_argument("--tasks", nargs="+", help="reasoning-gym families instead of the held-out arithmetic pool")
    ap.add_argument("--out", default="runs/bench-breakdown")
    ap.add_argument("--retokenize", action="store_true", help="encode prompts from their whole text (as before)")
    args = ap.parse_args()
    if args.retokenize:
        TokenMemo.encode = lambda self, text, tokenize: tokenize(text)
    out = Path(args.out)
    tree = tree_search(
        args.strategy, args.n, step_cut=args.step_cut, max_iterations=8 if args.step_cut == "sentence" else 6
    )
    runs = {
        "best-of-N": SearchConfig(strategy="best_of_n", n=args.n, max_tokens=160, step_cut=args.step_cut),
        args.strategy: tree,
    }
    base = GenerateConfig(
        pool=bench_pool(args.tasks, 1000, args.problems),
        prm=args.prm,
        problems_per_batch=args.problems,
        overwrite=True,  # timings: every run fresh (synth overwrites only run dirs it made)
    )
    policy, prm = load_policy(base), load_prm(args.prm)
    timers = Timers()
    timers.install(policy)
    table: dict[str, dict[str, float]] = {}
    walls, steps, tokens, checks, prefills = {}, {}, {}, {}, {}
    for name, search in runs.items():
        d = out / name.replace("-", "").lower()
        timers.reset()
        s = generate(dataclasses.replace(base, search=search, output_dir=str(d)), policy=policy, prm=prm)
        walls[name], steps[name] = s["wall_s"], timers.decode_steps
        checks[name] = (timers.stop_decodes, timers.row_steps)
        prefills[name] = (timers.prefilled, timers.reused, timers.prompts)
        tokens[name] = sum(r["generated_tokens"] for r in Journal(d / "rows.jsonl").read())
        parts = dict(timers.seconds)
        parts["other"] = max(s["wall_s"] - sum(parts.values()), 0.0)
        table[name] = parts
    pool = " ".join(args.tasks) if args.tasks else "held-out arithmetic"
    print(f"\n{args.problems} {pool} problems in one batch, N={args.n}, {args.step_cut} steps, PRM {args.prm}\n")
    names = list(runs)
    print("| part | " + " | ".join(f"{n}: s | share" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for part in [DECODE] + [p for _, _, p in PARTS] + ["other"]:
        cells = [f"{table[n].get(part, 0.0):.1f} | {table[n].get(part, 0.0) / walls[n]:.0%}" for n in names]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print("| wall | " + " | ".join(f"{walls[n]:.1f} | 100%" for n in names) + " |")
    for n in names:
        ms = 1000 * table[n].get(DECODE, 0.0) / max(steps[n], 1)
        stops = (
            f"; stop strings matched on {checks[n][0]} of {checks[n][1]} sampled rows (the others' windows hold no "
            "token that may start one)"
            if runs[n].strategy != "best_of_n"
            else ""
        )
        print(
            f"\n{n}: {tokens[n]} generated tokens, {steps[n]} decode steps, {tokens[n] / max(steps[n], 1):.1f} rows "
            f"per step, {ms:.0f} ms per decode forward{stops}; prefills ran {prefills[n][0]} tokens of "
            f"{prefills[n][2]} distinct prompts and found {prefills[n][1]} kept"
        )
    print(f"\n{names[1]} / best-of-N wall: {walls[names[1]] / walls[names[0]]:.2f}x")


if __name__ == "__main__":
    main()
