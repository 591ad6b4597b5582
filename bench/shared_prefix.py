"""Decoding with each prompt's KV held once for its samples (shared-prefix attention) against copying it to
every sample's row, per prompt family and dtype: tokens/s and how far each is from fp32.

    python bench/shared_prefix.py [--tasks basic_arithmetic,gsm_symbolic] [--problems 2] [--n 64]
        [--max-tokens 96] [--dtypes bfloat16,float32] [--threads 1] [--repeats 2]

Best-of-N (T=0.8, batch 64) on the same prompts, the two ways alternating (`--repeats` times each, so a
drift of the machine's speed hits both alike); the ratio is of their total tokens/s. Then accuracy:
each prompt's fp32 greedy continuation (64 tokens) is teacher-forced through 4 samples of the prompt in
each dtype, both ways, and the script prints the mean over steps of the largest |log p - log p fp32|
over the vocabulary (fp32 shared against fp32 copied is the rounding of the merge alone). Run it alone
on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.generate.engine import SamplingParams  # noqa: E402
from synth.generate.hf import TransformersPolicy  # noqa: E402
from synth.models import resolve_model  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402


def rate(policy: TransformersPolicy, prompts: list[str], shared: bool, n: int, max_tokens: int) -> tuple[int, float]:
    """(generated tokens, seconds) of one best-of-N call, the prompts' KV shared or copied to rows."""
    policy.shares_prefix = shared
    t = time.perf_counter()
    outs = policy.generate(prompts, SamplingParams(n=n, max_tokens=max_tokens, temperature=0.8, seed=0))
    return sum(c.num_tokens for o in outs for c in o), time.perf_counter() - t


def forced_log_probs(policy: TransformersPolicy, prompt: str, tokens: list[int], shared: bool) -> torch.Tensor:
    """Next-token log-probs (steps, vocab) of 4 samples of `prompt` fed `tokens` (the first sample's)."""
    policy.shares_prefix = shared
    seen, step = [], [0]

    def forced(logits, params, gen):
        seen.append(logits[0].float().log_softmax(-1))
        token = tokens[min(step[0], len(tokens) - 1)]
        step[0] += 1
        return torch.full((logits.shape[0],), token, device=logits.device)

    real = TransformersPolicy._sample
    TransformersPolicy._sample = staticmethod(forced)
    try:
        policy.generate([prompt], SamplingParams(n=4, max_tokens=len(tokens), temperature=0))
    finally:
        TransformersPolicy._sample = staticmethod(real)
    return torch.stack(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="basic_arithmetic,gsm_symbolic")
    ap.add_argument("--problems", type=int, default=2)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model("smollm2-135m")
    tasks = [t for t in args.tasks.split(",") if t]
    dtypes = [d for d in args.dtypes.split(",") if d]
    pools = {t: load_pool(PoolConfig(tasks=[t], num_problems=args.problems, seed=123)) for t in tasks}
    policies = {d: TransformersPolicy(path, dtype=d) for d in dict.fromkeys(["float32", *dtypes])}
    if not all(p.shares_prefix for p in policies.values()):
        sys.exit("this transformers / model does not run shared-prefix attention: nothing to compare")
    print(
        f"\nSmolLM2-135M, transformers engine, {args.problems} problems per family x N={args.n}, "
        f"max {args.max_tokens} tokens, T=0.8, batch 64, {args.threads} thread(s)\n"
    )
    print(f"{'family':18}{'prompt tok':>11}{'dtype':>10}{'copied tok/s':>13}{'shared tok/s':>13}{'ratio':>7}")
    for task in tasks:
        for dtype in dtypes:
            policy = policies[dtype]
            prompts = [policy.chat_prompt(p.problem) for p in pools[task]]
            policy.generate(prompts[:1], SamplingParams(n=2, max_tokens=4))  # warm-up
            total = {True: [0, 0.0], False: [0, 0.0]}
            for _ in range(args.repeats):
                for shared in (False, True):
                    tokens, seconds = rate(policy, prompts, shared, args.n, args.max_tokens)
                    total[shared][0] += tokens
                    total[shared][1] += seconds
            copied, shared = (total[s][0] / total[s][1] for s in (False, True))
            length = sum(len(policy.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts) / len(prompts)
            print(f"{task:18}{length:>11.0f}{dtype:>10}{copied:>13.1f}{shared:>13.1f}{shared / copied:>6.2f}x")

    print("\nmean over steps of max |log p - log p fp32 (prompt KV copied)|, teacher-forced\n")
    ref = policies["float32"]
    print(f"{'family':18}{'dtype':>10}{'copied':>9}{'shared':>9}")
    for task in tasks:
        prompts = [ref.chat_prompt(p.problem) for p in pools[task]]
        greedy = ref.generate(prompts, SamplingParams(n=1, max_tokens=64, temperature=0))
        forced = [ref.tokenizer(o[0].text, add_special_tokens=False).input_ids[:60] for o in greedy]
        bases = [forced_log_probs(ref, p, f, False) for p, f in zip(prompts, forced)]
        for dtype in dict.fromkeys(["float32", *dtypes]):
            errors = {}
            for shared in (False, True):
                gaps = []
                for p, f, base in zip(prompts, forced, bases):
                    x = forced_log_probs(policies[dtype], p, f, shared)
                    k = min(len(x), len(base))
                    gaps.append((x[:k] - base[:k]).abs().amax(-1).mean().item())
                errors[shared] = sum(gaps) / len(gaps)
            print(f"{task:18}{dtype:>10}{errors[False]:>9.4f}{errors[True]:>9.4f}")


if __name__ == "__main__":
    main()
