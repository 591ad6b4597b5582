"""Steps scored per second by our TokenClassificationPRM: batched `score` vs one pair at a time.

    python bench/prm_throughput.py [--pairs 200] [--batch-size 32] [--threads N]

The PRM is the bundled default (`load_prm("default")`) when synth/prm/default exists, else a
TokenClassificationPRM over the real SmolLM2-135M backbone with an untrained one-logit head (fine for
throughput). Work: `--pairs` (problem, steps) pairs from reasoning-gym problems with 2-4 synthetic
steps each. Prints steps/s for one `score` call over all pairs (sorted by length, padded, one forward
per batch) and for one `score` call per pair, and the ratio batched / one-by-one, in the dtype
`--dtype` (auto: bf16 where the CPU/GPU has native bf16); then batched float32 vs bfloat16 on the same
pairs (ratio and the largest score difference); then beam-search-like candidates (each pair's path
with M=4 different last steps, as siblings of one parent) scored with shared prefixes vs without; last, the
pairs batched and those candidates scored on their parents' kept KV (the parents scored by the call before, as
tree search does) with masked attention sharing each KV head among its query heads vs copying it to each
(`gqa_sdpa.SHARES_KV_HEADS`: transformers' SDPA copies under a mask on a CPU), alternating, the second time counts.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.generate import gqa_sdpa  # noqa: E402
from synth.prm.load import BUNDLED_DIR, load_prm  # noqa: E402
from synth.prm.token_cls import META, TokenClassificationPRM  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402

STEP_TEMPLATES = [
    "First, let me restate the task: {head}",
    "I will work through the expression from left to right, keeping a running total.",
    "Carrying out each operation in turn gives the intermediate values.",
    "Checking the arithmetic once more, every intermediate result is consistent.",
    "So the final answer is {answer}.",
]


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic", "chain_sum", "leg_counting"], num_problems=n, seed=seed))
    rng = random.Random(seed)
    texts, steps = [], []
    for p in problems:
        k = rng.randint(2, 4)
        body = [STEP_TEMPLATES[i] for i in sorted(rng.sample(range(len(STEP_TEMPLATES) - 1), k - 1))]
        fill = dict(head=p.problem[:80], answer=p.answer)
        texts.append(p.problem)
        steps.append([s.format(**fill) for s in body] + [STEP_TEMPLATES[-1].format(**fill)])
    return texts, steps


def make_siblings(problems: list[str], steps: list[list[str]], m: int = 4) -> tuple[list[str], list[list[str]]]:
    """Each path as the parent of m candidates that differ only in their last step (a beam-search batch)."""
    texts, cands = [], []
    for p, s in zip(problems, steps):
        for j in range(m):
            texts.append(p)
            cands.append(s[:-1] + [f"{STEP_TEMPLATES[j % (len(STEP_TEMPLATES) - 1)].format(head=p[:40])} ({j})"])
    return texts, cands


def make_prm(batch_size: int, device: str | None, dtype: str = "auto"):
    if (BUNDLED_DIR / META).exists():
        return "default", load_prm("default", batch_size=batch_size, device=device, dtype=dtype)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from synth.models import resolve_model

    path = resolve_model("smollm2-135m")
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    return "smollm2-135m backbone, untrained head", TokenClassificationPRM(
        model, tok, batch_size=batch_size, device=device, dtype=dtype
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    name, prm = make_prm(args.batch_size, args.device, args.dtype)
    problems, steps = make_pairs(args.pairs)
    n_steps = sum(len(s) for s in steps)
    n_tokens = sum(len(prm.tokenizer.encode(p + " ".join(s))) for p, s in zip(problems, steps))
    print(
        f"PRM: {name} on {prm.device} in {prm.dtype}, {torch.get_num_threads()} threads; {len(problems)} pairs, "
        f"{n_steps} steps, ~{n_tokens} tokens; batch size {args.batch_size}"
    )

    prm.score(problems[:2], steps[:2])  # warm-up

    def fresh(texts: list[str], paths: list[list[str]]) -> list[list[float]]:
        """A score call on nothing kept from earlier calls (the PRM keeps scored sequences' KV for the next)."""
        prm.new_search()
        return prm.score(texts, paths)

    t = time.perf_counter()
    batched = fresh(problems, steps)
    batched_s = time.perf_counter() - t

    t = time.perf_counter()
    single = [fresh([p], [s])[0] for p, s in zip(problems, steps)]
    single_s = time.perf_counter() - t

    diff = max(abs(a - b) for x, y in zip(batched, single) for a, b in zip(x, y))
    print(f"{'batched':<12} {n_steps / batched_s:9.1f} steps/s  ({batched_s:.2f} s)")
    print(f"{'one-by-one':<12} {n_steps / single_s:9.1f} steps/s  ({single_s:.2f} s)")
    print(f"ratio batched / one-by-one: {single_s / batched_s:.2f}x   (max |score difference| {diff:.2e})")

    timed = {}
    for dtype in (torch.float32, torch.bfloat16):
        prm.model.to(dtype)
        fresh(problems[:2], steps[:2])
        t = time.perf_counter()
        timed[dtype] = (fresh(problems, steps), time.perf_counter() - t)
    (a, fp32_s), (b, bf16_s) = timed[torch.float32], timed[torch.bfloat16]
    diff = max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    print(
        f"batched float32 {n_steps / fp32_s:9.1f} steps/s | bfloat16 {n_steps / bf16_s:9.1f} steps/s | "
        f"ratio bf16 / fp32: {fp32_s / bf16_s:.2f}x   (max |score difference| {diff:.3f})"
    )

    if not hasattr(prm, "share_prefixes"):
        return
    prm.model.to(prm.dtype)
    texts, cands = make_siblings(problems[: max(1, len(problems) // 4)], steps[: max(1, len(problems) // 4)])
    timed = {}
    for share in (False, True, False, True):  # twice each, the second time counts
        prm.share_prefixes = share
        t = time.perf_counter()
        timed[share] = (fresh(texts, cands), time.perf_counter() - t)
    (a, plain_s), (b, shared_s) = timed[False], timed[True]
    diff = max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    n = sum(len(c) for c in cands)
    print(
        f"beam-like siblings ({len(cands)} candidates, M=4, {prm.dtype}): without prefix sharing {n / plain_s:.1f} steps/s | "
        f"shared {n / shared_s:.1f} steps/s | ratio {plain_s / shared_s:.2f}x   (max |score difference| {diff:.3f})"
    )

    parents = [c[:-1] or c for c in cands]
    timed = {}
    for shares in (False, True, False, True):
        gqa_sdpa.SHARES_KV_HEADS = shares
        t = time.perf_counter()
        pairs = fresh(problems, steps)
        pairs_s = time.perf_counter() - t
        fresh(texts, parents)
        t = time.perf_counter()
        timed[shares] = (pairs, pairs_s, prm.score(texts, cands), time.perf_counter() - t)
    (a, copied_s, ka, kept_copied_s), (b, shared_s, kb, kept_shared_s) = timed[False], timed[True]
    same = a == b and ka == kb
    print(
        f"KV heads copied vs shared ({prm.dtype}): pairs batched {n_steps / copied_s:.1f} vs {n_steps / shared_s:.1f} "
        f"steps/s ({copied_s / shared_s:.2f}x); candidates on kept KV {n / kept_copied_s:.1f} vs {n / kept_shared_s:.1f} "
        f"steps/s ({kept_copied_s / kept_shared_s:.2f}x); scores identical: {same}"
    )


if __name__ == "__main__":
    main()
