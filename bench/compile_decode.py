"""A decode step of the bundled policy eager against `torch.compile` (inductor, dynamic shapes), per batch size.

    python bench/compile_decode.py [--batch-sizes 1 4 16 64] [--context 150] [--threads 2] [--dtype float32]

The model as synth's transformers engine runs it (reserved KV cache, a padded batch's 2D mask), without
shared-prefix attention: `--context` prompt tokens prefilled, then 20 decode steps per batch size; prints the
first compiled step (compile time, recompiles included) and the median step both ways, and their ratio.
bf16 compiles only with plain linears (inductor cannot lower the engine's packed ones), so `--dtype bfloat16`
times the model unpacked. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoModelForCausalLM  # noqa: E402

from synth.generate.reserved_cache import reserved_cache  # noqa: E402
from synth.models import resolve_model  # noqa: E402


def steps(forward, model, batch: int, context: int, n: int = 20) -> list[float]:
    """Seconds of each of `n` decode steps after a `context`-token prefill of `batch` rows (one row padded)."""
    cache = reserved_cache(model.config, context + n)
    ids = torch.randint(0, 1000, (batch, context))
    mask = torch.ones(batch, context, dtype=torch.long)
    mask[0, :5] = 0
    times = []
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1)
        for i in range(n):
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            t = time.perf_counter()
            forward(
                input_ids=ids[:, :1],
                attention_mask=mask,
                position_ids=torch.full((batch, 1), context + i),
                cache=cache,
                use_cache=True,
            )
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--context", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(None), dtype=getattr(torch, args.dtype)).eval()
    compiled = torch.compile(model.forward, dynamic=True)
    print(f"SmolLM2-135M, {args.dtype}, {args.threads} threads, {args.context}-token context\n")
    print("| rows | eager ms / step | compiled ms / step | eager / compiled | first compiled step s |")
    print("|---|---|---|---|---|")
    for batch in args.batch_sizes:
        eager = sorted(steps(model.forward, model, batch, args.context))
        comp = steps(compiled, model, batch, args.context)
        first, comp = comp[0], sorted(comp[1:])
        e, c = eager[len(eager) // 2], comp[len(comp) // 2]
        print(f"| {batch} | {1000 * e:.1f} | {1000 * c:.1f} | {e / c:.2f}x | {first:.1f} |", flush=True)


if __name__ == "__main__":
    main()
