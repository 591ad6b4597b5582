"""Tokens/s of synth's transformers engine vs plain `model.generate` loops on the same work.

    python bench/generate_throughput.py [--problems 16] [--n 8] [--max-tokens 128] [--quickstart]

Prints three rows on the same prompts, same N, same max tokens, sampling at T=0.8:
  synth engine         TransformersPolicy.generate (batched across problems and samples)
  plain loop           one model.generate(num_return_sequences=N) call per problem
  plain one batch      one hand-written left-padded model.generate over all sequences
and the ratios synth/plain. Tokens are counted up to and including EOS.
With --quickstart it also runs configs/quickstart.yaml into a temp dir and prints problems/min.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.generate.engine import SamplingParams  # noqa: E402
from synth.generate.hf import TransformersPolicy  # noqa: E402
from synth.models import resolve_model  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402


def count_tokens(rows: torch.Tensor, eos: set[int]) -> int:
    total = 0
    for row in rows.tolist():
        end = next((k for k, t in enumerate(row) if t in eos), None)
        total += len(row) if end is None else end + 1
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--quickstart", action="store_true")
    ap.add_argument("--dtype", default="auto", help="policy dtype (auto: bf16 on GPUs and CPUs with native bf16)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    policy = TransformersPolicy(resolve_model("smollm2-135m"), batch_size=args.problems * args.n, dtype=args.dtype)
    model, tok = policy.model, policy.tokenizer
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic", "chain_sum"], num_problems=args.problems, seed=123))
    prompts = [policy.chat_prompt(p.problem) for p in problems]
    params = SamplingParams(n=args.n, max_tokens=args.max_tokens, temperature=0.8, seed=0)
    gen_kw = dict(
        do_sample=True,
        temperature=0.8,
        top_p=1.0,
        top_k=None,
        max_new_tokens=args.max_tokens,
        pad_token_id=tok.pad_token_id,
        eos_token_id=sorted(policy.eos_ids),
    )

    policy.generate(prompts[:1], SamplingParams(n=1, max_tokens=4))  # warm-up

    t = time.perf_counter()
    outs = policy.generate(prompts, params)
    synth_s = time.perf_counter() - t
    synth_tok = sum(c.num_tokens for o in outs for c in o)

    torch.manual_seed(0)
    t, loop_tok = time.perf_counter(), 0
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**enc, num_return_sequences=args.n, **gen_kw)
            loop_tok += count_tokens(out[:, enc.input_ids.shape[1] :], policy.eos_ids)
    loop_s = time.perf_counter() - t

    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.inference_mode():
        enc = tok(
            [p for p in prompts for _ in range(args.n)], return_tensors="pt", padding=True, add_special_tokens=False
        )
        out = model.generate(**enc, **gen_kw)
        batch_tok = count_tokens(out[:, enc.input_ids.shape[1] :], policy.eos_ids)
    batch_s = time.perf_counter() - t

    print(
        f"\nSmolLM2-135M {str(model.dtype).removeprefix('torch.')}, {args.problems} problems x N={args.n}, "
        f"max {args.max_tokens} tokens, {torch.get_num_threads()} threads"
    )
    print(f"{'':18}{'tokens':>8}{'seconds':>9}{'tok/s':>8}")
    for name, n_tok, s in [
        ("synth engine", synth_tok, synth_s),
        ("plain loop", loop_tok, loop_s),
        ("plain one batch", batch_tok, batch_s),
    ]:
        print(f"{name:18}{n_tok:>8}{s:>9.1f}{n_tok / s:>8.1f}")
    print(f"ratio synth / plain loop      : {synth_tok / synth_s / (loop_tok / loop_s):.2f}x")
    print(f"ratio synth / plain one batch : {synth_tok / synth_s / (batch_tok / batch_s):.2f}x")

    if args.quickstart:
        from synth.config import from_dict, load_yaml
        from synth.generate.run import GenerateConfig, generate

        root = Path(__file__).resolve().parents[1]
        with tempfile.TemporaryDirectory() as tmp:
            data = load_yaml(root / "configs" / "quickstart.yaml")
            data["output_dir"] = tmp + "/run"
            cfg = from_dict(GenerateConfig, data)
            t = time.perf_counter()
            summary = generate(cfg, policy=policy)
            minutes = (time.perf_counter() - t) / 60
        n = summary["n"]
        print(
            f"quickstart: {summary['problems']} problems in {minutes * 60:.0f} s = {summary['problems'] / minutes:.1f} problems/min "
            f"(pass@1 {summary['pass@1']:.3f}, maj@{n} {summary[f'maj@{n}']:.3f}, pass@{n} {summary[f'pass@{n}']:.3f})"
        )


if __name__ == "__main__":
    main()
