"""synth's transformers engine against the machine's matmul ceiling, per dtype, and where its time goes.

    python bench/roofline.py [--problems 8] [--n 64] [--max-tokens 96] [--dtypes float32,bfloat16]
        [--threads 1] [--breakdown-problems 2] [--plain-linears]

For each dtype: best-of-N on the same basic_arithmetic prompts (T=0.8), generated tokens/s, the model
FLOP/s that is (2 x params per token + attention over the context, prompts prefilled once), the FLOP/s
of a 2048^3 matmul in that dtype on the same threads (the faster of torch.matmul and oneDNN's packed linear), and their ratio: the fraction of the
compute roofline. Decoding also reads every weight once per step and each row's KV cache once per
token; with the read bandwidth of one large tensor sum, the time a decode step cannot beat is
max(FLOPs / matmul FLOP/s, bytes / bandwidth) (a roofline with both roofs; with --n equal to
--batch-size each prompt's samples decode as one batch, so a prompt's steps are its longest sample).
"of bound" is that time over the measured one. `--plain-linears` also runs each dtype with its linears
unpacked (`F.linear`, as the engine did before packing them). Then a profiled rerun on the first --breakdown-problems problems splits the engine's time
into matmuls, attention, sampling, KV-cache copies and the rest (shares of profiled op time; the
profiler itself slows small ops, so shares, not seconds). Last, the engine's own ops against what they
replace, at decode size (64 rows, one thread): sampling (inverse CDF vs torch.multinomial), fp32 and
bf16 linears with their weights packed vs F.linear (an MLP matmul and the LM head), and appending one token to a
layer's KV (the reserved cache's write vs DynamicLayer's torch.cat). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.generate.engine import SamplingParams  # noqa: E402
from synth.models import resolve_model  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402

# profiler op name -> breakdown group (anything else is "other")
GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_efficient_attention"),
    "sampling": ("aten::_softmax", "aten::cumsum", "aten::searchsorted", "aten::div", "aten::uniform_", "aten::argmax"),
    "kv cache": ("aten::index", "aten::copy_", "aten::cat", "aten::index_select"),
}


def matmul_flops(threads: int, size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a size^3 matmul in `dtype` with `threads` threads (best of `repeats`): the faster of
    torch.matmul and, on a CPU, oneDNN's packed linear (the engine's; on some CPUs torch.matmul's BLAS is
    the slower one, and the ceiling is what the machine can do)."""
    from synth.generate.packed_linear import PackedLinear, packable

    device = "cuda" if torch.cuda.is_available() else "cpu"
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        ops = [lambda: a @ b]
        if packable(b):
            linear = torch.nn.Linear(size, size, bias=False, device=device, dtype=dtype)
            packed = PackedLinear(linear)
            ops.append(lambda: packed(a))
        best = float("inf")
        with torch.inference_mode():
            for op in ops:
                op()  # warm-up
                for _ in range(repeats):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    op()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return 2 * size**3 / best


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def flops_per_token(config, params: int, context: float) -> float:
    """Forward FLOPs for one decoded token: 2 x params (each weight is one multiply-add; the tied
    embedding is counted once, as the LM-head matmul, its lookup is free) + attention scores and
    values over `context` earlier tokens (2 x 2 x heads x head_dim x context per layer)."""
    head_dim = _head_dim(config)
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context
    return 2 * params + attention


def read_bandwidth(threads: int, gib: float = 1.0, repeats: int = 3) -> float:
    """Bytes/s of summing a `gib` GiB float32 tensor with `threads` threads (best of `repeats`)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.ones(int(gib * 2**28))
        a.sum()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a.sum()
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return a.numel() * 4 / best


def bound_seconds(config, params: int, elsize: int, outs, flop_s: float, byte_s: float) -> float:
    """The time no engine beats on this work: per prompt (one batch), max(FLOPs / flop_s, bytes / byte_s)
    with weights read once per decode step and the KV of each row's context once per token."""
    head_dim = _head_dim(config)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    kv_per_context_token = 2 * config.num_hidden_layers * kv_heads * head_dim * elsize
    total = 0.0
    for o in outs:
        prompt = o[0].prompt_tokens
        tokens = sum(c.num_tokens for c in o)
        context = prompt + tokens / len(o) / 2
        flops = (tokens + prompt) * flops_per_token(config, params, context)
        steps = 1 + max(c.num_tokens for c in o)
        bytes_read = steps * params * elsize + tokens * context * kv_per_context_token
        total += max(flops / flop_s, bytes_read / byte_s)
    return total


def model_flop_s(config, params: int, tokens: int, prompt_tokens: int, sequences: int, prompts: int, seconds: float):
    """(FLOPs per token, model FLOP/s) of a run: every generated token and every prompt token once."""
    context = prompt_tokens / prompts + tokens / sequences / 2  # average attended context while decoding
    fpt = flops_per_token(config, params, context)
    return fpt, (tokens + prompt_tokens) * fpt / seconds


def run(policy, prompts: list[str], n: int, max_tokens: int):
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=0.8, seed=0)
    t = time.perf_counter()
    outs = policy.generate(prompts, params)
    seconds = time.perf_counter() - t
    return outs, sum(c.num_tokens for o in outs for c in o), sum(o[0].prompt_tokens for o in outs), seconds


def breakdown(policy, prompts: list[str], n: int, max_tokens: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(policy, prompts, n, max_tokens)
    spent = {group: 0.0 for group in (*GROUPS, "other")}
    for event in prof.key_averages():
        group = next((g for g, names in GROUPS.items() if event.key in names), "other")
        spent[group] += event.self_cpu_time_total
    total = sum(spent.values())
    return {g: s / total for g, s in spent.items()}


def _ms(fn, repeats: int = 20) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1e3


def op_timings(config, rows: int = 64, context: int = 150) -> list[tuple[str, float, float]]:
    """(op, ms ours, ms of what it replaces) at decode size, bf16 where the engine runs bf16."""
    import torch.nn.functional as F
    from transformers.cache_utils import DynamicLayer

    from synth.generate.engine import SamplingParams
    from synth.generate.hf import TransformersPolicy
    from synth.generate.packed_linear import PackedLinear
    from synth.generate.reserved_cache import ReservedLayer
    from synth.models import cpu_has_native_bf16

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, config.vocab_size)
    params = SamplingParams(temperature=0.8)
    out = [
        (
            f"sample {rows} x {config.vocab_size}",
            _ms(lambda: TransformersPolicy._sample(logits, params, gen)),
            _ms(lambda: torch.multinomial((logits / 0.8).softmax(-1), 1, generator=gen)),
        )
    ]
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        if dtype == torch.bfloat16 and not cpu_has_native_bf16():
            continue
        x = torch.randn(rows, config.hidden_size, dtype=dtype)
        for name, n_out in (("MLP up", config.intermediate_size), ("LM head", config.vocab_size)):
            linear = torch.nn.Linear(config.hidden_size, n_out, bias=False, dtype=dtype)
            packed = PackedLinear(linear)
            with torch.inference_mode():
                out.append(
                    (
                        f"{label} linear {name} ({rows} x {config.hidden_size} x {n_out})",
                        _ms(lambda packed=packed, x=x: packed(x)),
                        _ms(lambda w=linear.weight, x=x: F.linear(x, w)),
                    )
                )
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    shape = (rows, kv_heads, context, _head_dim(config))
    k, new = torch.randn(shape), torch.randn(rows, kv_heads, 1, shape[-1])
    ours, theirs = ReservedLayer(capacity=context + 32), DynamicLayer()  # room for the timed appends
    ours.update(k, k), theirs.update(k, k)
    out.append(
        (
            f"append a token to one layer's KV ({rows} rows, {context} tokens)",
            _ms(lambda: ours.update(new, new), 10),
            _ms(lambda: theirs.update(new, new), 10),
        )
    )
    return out


def unpack_linears(model) -> None:
    """Swap every `PackedLinear` back for a plain `nn.Linear` on the same weight."""
    from synth.generate.packed_linear import PackedLinear

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--batch-size", type=int, default=64, help="TransformersPolicy batch_size (GenerateConfig's default)"
    )
    ap.add_argument("--plain-linears", action="store_true", help="also run each dtype with F.linear (unpacked)")
    ap.add_argument("--breakdown-problems", type=int, default=2, help="problems in the profiled run (0: none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoConfig

    from synth.generate.hf import TransformersPolicy

    path = resolve_model("smollm2-135m")
    config = AutoConfig.from_pretrained(path)
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic"], num_problems=args.problems, seed=123))
    print(
        f"\nSmolLM2-135M, transformers engine, {args.problems} basic_arithmetic problems x N={args.n}, "
        f"max {args.max_tokens} tokens, T=0.8, batch {args.batch_size}, {args.threads} thread(s)\n"
    )
    bandwidth = read_bandwidth(args.threads)
    print(
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s; ceiling: 2048^3 matmul GFLOP/s in the row's dtype, the faster of torch.matmul and oneDNN\n"
    )
    print(
        f"{'dtype':26}{'tokens':>8}{'seconds':>9}{'tok/s':>8}{'GFLOP/s':>9}{'ceiling':>9}{'of compute':>11}"
        f"{'bound tok/s':>12}{'of bound':>9}"
    )
    shares = {}
    runs = [(d.strip(), False) for d in args.dtypes.split(",") if d.strip()]
    if args.plain_linears:
        runs += [(name, True) for name, _ in runs]
    for name, plain in runs:
        policy = TransformersPolicy(path, batch_size=args.batch_size, dtype=name)
        if plain:  # the engine as it was before its linears were packed
            unpack_linears(policy.model)
        prompts = [policy.chat_prompt(p.problem) for p in problems]
        policy.generate(prompts[:1], SamplingParams(n=2, max_tokens=4))  # warm-up
        outs, tokens, prompt_tokens, seconds = run(policy, prompts, args.n, args.max_tokens)
        params = sum(p.numel() for p in policy.model.parameters())  # tied embeddings counted once
        _, achieved = model_flop_s(config, params, tokens, prompt_tokens, len(prompts) * args.n, len(prompts), seconds)
        ceiling = matmul_flops(args.threads, dtype=getattr(torch, name))
        bound = bound_seconds(config, params, policy.model.dtype.itemsize, outs, ceiling, bandwidth)
        label = name + (", plain linears" if plain else "")
        print(
            f"{label:26}{tokens:>8}{seconds:>9.1f}{tokens / seconds:>8.1f}{achieved / 1e9:>9.1f}"
            f"{ceiling / 1e9:>9.1f}{achieved / ceiling:>11.1%}{tokens / bound:>12.0f}{bound / seconds:>9.1%}"
        )
        if args.breakdown_problems and not plain:
            shares[name] = breakdown(policy, prompts[: args.breakdown_problems], args.n, args.max_tokens)
        del policy
    ops = op_timings(config)
    print("\nthe engine's ops against what they replace (one thread)\n")
    print(f"{'op':62}{'ours ms':>9}{'replaced ms':>12}{'ratio':>8}")
    for name, ours, theirs in ops:
        print(f"{name:62}{ours:>9.3f}{theirs:>12.3f}{theirs / ours:>7.1f}x")
    if shares:
        groups = list(next(iter(shares.values())))
        print(f"\nwhere the time goes (profiled, {args.breakdown_problems} problems x N={args.n}; shares of op time)\n")
        print(f"{'dtype':10}" + "".join(f"{g:>11}" for g in groups))
        for name, s in shares.items():
            print(f"{name:10}" + "".join(f"{s[g]:>11.1%}" for g in groups))


if __name__ == "__main__":
    main()
