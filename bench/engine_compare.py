"""vLLM vs synth's transformers engine on the same work, and both against the machine's matmul ceiling.

    .venv-vllm/bin/python bench/engine_compare.py [--problems 16] [--max-tokens 128] [--ns 16,64]
        [--dvts-n 16] [--prm default|constant|PATH] [--hf-threads N] [--out runs/bench-engines/results.json]

Needs both engines, so run it from .venv-vllm (`make install-vllm`). One run, one process:
  1. best-of-N, same prompts (reasoning-gym basic_arithmetic via synth.problems), same N, same max
     tokens, T=0.8: generated tokens/s of TransformersPolicy vs VLLMPolicy at each N in --ns;
  2. DVTS at N=--dvts-n (M=--beam-width) with the PRM: wall time with vLLM prefix caching on vs off
     (and the transformers engine for reference); the time inside the policy is reported apart from
     the PRM's;
  3. the physical ceiling: model FLOPs per generated token (2 x params + attention over the average
     context) vs the FLOP/s torch.matmul reaches here (large GEMM in --dtype, default float32; all threads and 1 thread),
     and the fraction of it each engine achieves.
Tokens are counted as the engines report them (EOS and stop-string tokens included).

Run it on a quiet machine: with another job on the CPU, torch's OpenMP threads wait for each other
and the transformers engine can slow down 10-30x (measured here: 59 tok/s with 1 thread, 1.9 tok/s
with 2 threads while another process held a core), which says nothing about the engines. The
script warns when the load average is high; --hf-threads 1 sidesteps the worst of it. On CPU
vLLM's worker computes on all cores but one (one is left to its scheduler process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# lets us ask the vLLM worker how many threads it computes on (collective_rpc with a function);
# local benchmark only
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

import torch  # noqa: E402
from roofline import matmul_flops, model_flop_s  # noqa: E402  (bench/ is the script's dir)

from synth.generate.engine import SamplingParams  # noqa: E402
from synth.generate.search import SearchConfig, dvts  # noqa: E402
from synth.models import resolve_model  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402


class TimedPolicy:
    """Wraps a policy and adds up the seconds spent in generate (to split policy time from PRM time)."""

    def __init__(self, policy):
        self.policy, self.seconds, self.tokens = policy, 0.0, 0

    def chat_prompt(self, problem):
        return self.policy.chat_prompt(problem)

    def generate(self, prompts, params):
        t = time.perf_counter()
        out = self.policy.generate(prompts, params)
        self.seconds += time.perf_counter() - t
        self.tokens += sum(c.num_tokens for o in out for c in o)
        return out


class ConstantPRM:
    """Every step scores 0.5 (DVTS then keeps the first candidate): engine time without a PRM model."""

    def score(self, problems, steps):
        return [[0.5] * len(s) for s in steps]


def _worker_threads(worker) -> int:
    import torch as _torch

    return _torch.get_num_threads()


def vllm_threads(llm) -> int | None:
    try:
        return int(llm.collective_rpc(_worker_threads)[0])
    except Exception:  # an engine or version without callable RPCs
        return None


def best_of_n_run(policy, prompts: list[str], n: int, max_tokens: int) -> dict:
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=0.8, seed=0)
    t = time.perf_counter()
    outs = policy.generate(prompts, params)
    seconds = time.perf_counter() - t
    tokens = sum(c.num_tokens for o in outs for c in o)
    prompt_tokens = sum(o[0].prompt_tokens for o in outs)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": tokens / seconds,
        "prompt_tokens": prompt_tokens,
        "finished": sum(c.stop_reason == "eos" for o in outs for c in o) / max(1, sum(len(o) for o in outs)),
    }


def dvts_run(policy, problems, cfg: SearchConfig, prm) -> dict:
    timed = TimedPolicy(policy)
    t = time.perf_counter()
    results = dvts(timed, problems, cfg, seed=0, prm=prm)
    wall = time.perf_counter() - t
    return {
        "wall_s": wall,
        "policy_s": timed.seconds,
        "prm_s": wall - timed.seconds,
        "generated_tokens": sum(r.cost.generated_tokens for r in results),
        "prefill_tokens": sum(r.cost.prefill_tokens for r in results),
        "engine_calls": max(r.cost.engine_calls for r in results),
    }


def load_bench_prm(spec: str | None):
    if spec in (None, "none", "constant"):
        return ConstantPRM(), "constant"
    from synth.prm.load import load_prm

    return load_prm(spec), spec


def main() -> None:
    from synth.prm.load import BUNDLED_DIR
    from synth.prm.token_cls import META

    bundled = (BUNDLED_DIR / META).exists()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=16, help="basic_arithmetic problems (same prompts for every run)")
    ap.add_argument("--max-tokens", type=int, default=128, help="max new tokens per best-of-N completion")
    ap.add_argument("--ns", default="16,64", help="best-of-N sample counts")
    ap.add_argument("--dvts-n", type=int, default=16, help="N of the DVTS runs (0: skip DVTS)")
    ap.add_argument("--beam-width", type=int, default=4, help="M of DVTS")
    ap.add_argument("--step-max-tokens", type=int, default=64)
    ap.add_argument("--max-iterations", type=int, default=6)
    ap.add_argument(
        "--prm",
        default="default" if bundled else None,
        help="PRM for DVTS: 'default' (the bundled one; the default when it exists), a PRM dir, "
        "or 'constant' (every step 0.5: no PRM model, engine time only)",
    )
    ap.add_argument(
        "--hf-batch-size", type=int, default=64, help="TransformersPolicy batch_size (GenerateConfig's default)"
    )
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="weights of both engines (and the ceiling GEMM)",
    )
    ap.add_argument(
        "--hf-threads",
        type=int,
        default=None,
        help="torch threads of the transformers engine (default: torch's, i.e. all cores). On a busy "
        "machine 1 is far more stable: OpenMP threads that wait on each other for a core thrash",
    )
    ap.add_argument("--no-hf-dvts", action="store_true", help="skip the transformers DVTS reference run")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.dvts_n and args.prm is None:
        ap.error(
            "DVTS needs a PRM and the bundled one is missing (scripts/make_default_prm.sh): "
            "pass --prm PATH, --prm constant, or --dvts-n 0"
        )
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        sys.exit(f"vLLM is not importable ({err}): run this from .venv-vllm (make install-vllm)")

    from transformers import AutoConfig

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * cores:
        print(
            f"WARNING: load average {load:.1f} on {cores} cores: other jobs share the CPU, timings will be noisy "
            f"(and multi-threaded torch can slow down many times over; try --hf-threads 1)",
            file=sys.stderr,
        )
    if args.hf_threads:
        torch.set_num_threads(args.hf_threads)

    from synth.generate.hf import TransformersPolicy
    from synth.generate.vllm import VLLMConfig, VLLMPolicy, release_engines

    ns = [int(x) for x in args.ns.split(",") if x.strip()]
    model_path = resolve_model("smollm2-135m")
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic"], num_problems=args.problems, seed=123))
    results: dict = {
        "dtype": args.dtype,
        "problems": args.problems,
        "max_tokens": args.max_tokens,
        "ns": ns,
        "cores": cores,
        "load_average_at_start": load,
        "best_of_n": {},
        "dvts": {},
    }

    # -- engines ----------------------------------------------------------------------------------
    hf = TransformersPolicy(model_path, batch_size=args.hf_batch_size, dtype=args.dtype)
    hf_threads = torch.get_num_threads()
    t = time.perf_counter()
    vl = VLLMPolicy(model_path, options=VLLMConfig(enable_prefix_caching=True), dtype=args.dtype)
    results["vllm_startup_s"] = time.perf_counter() - t
    vl_threads = vllm_threads(vl.llm)
    prompts = [hf.chat_prompt(p.problem) for p in problems]
    assert prompts == [vl.chat_prompt(p.problem) for p in problems]
    for pol in (hf, vl):  # warm-up
        pol.generate(prompts[:1], SamplingParams(n=2, max_tokens=4))

    # -- 1. best-of-N tokens/s --------------------------------------------------------------------
    for n in ns:
        row = {
            "transformers": best_of_n_run(hf, prompts, n, args.max_tokens),
            "vllm": best_of_n_run(vl, prompts, n, args.max_tokens),
        }
        row["ratio"] = row["vllm"]["tok_s"] / row["transformers"]["tok_s"]
        results["best_of_n"][n] = row

    # -- 2. DVTS: prefix caching on vs off --------------------------------------------------------
    if args.dvts_n:
        prm, prm_name = load_bench_prm(args.prm)
        results["prm"] = prm_name
        cfg = SearchConfig(
            strategy="dvts",
            n=args.dvts_n,
            beam_width=args.beam_width,
            max_iterations=args.max_iterations,
            step_max_tokens=args.step_max_tokens,
        )
        prm.score([problems[0].problem], [["warm-up"]])
        results["dvts"]["vllm_prefix_cache_on"] = dvts_run(vl, problems, cfg, prm)
        if not args.no_hf_dvts:
            results["dvts"]["transformers"] = dvts_run(hf, problems, cfg, prm)
        release_engines()  # one engine at a time; rebuild it without prefix caching
        vl_off = VLLMPolicy(model_path, options=VLLMConfig(enable_prefix_caching=False), dtype=args.dtype)
        vl_off.generate(prompts[:1], SamplingParams(n=2, max_tokens=4))
        results["dvts"]["vllm_prefix_cache_off"] = dvts_run(vl_off, problems, cfg, prm)
        release_engines()
    else:
        release_engines()

    # -- 3. physical ceiling ----------------------------------------------------------------------
    config = AutoConfig.from_pretrained(model_path)
    params = sum(p.numel() for p in hf.model.parameters())  # tied embeddings counted once
    all_threads = cores
    ceiling = {}
    for k in sorted({1, all_threads, hf_threads, vl_threads or all_threads}):
        ceiling[k] = matmul_flops(k, dtype=getattr(torch, args.dtype))
    results["ceiling"] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "params": params,
        "matmul_flop_s": {str(k): v for k, v in ceiling.items()},
        "hf_threads": hf_threads,
        "vllm_threads": vl_threads,
    }
    for n, row in results["best_of_n"].items():
        for name, threads in (("transformers", hf_threads), ("vllm", vl_threads or all_threads)):
            r = row[name]
            fpt, achieved = model_flop_s(
                config, params, r["tokens"], r["prompt_tokens"], args.problems * n, args.problems, r["seconds"]
            )
            r.update(
                flops_per_token=fpt,
                achieved_flop_s=achieved,
                ceiling_fraction=achieved / ceiling[threads],
                ceiling_fraction_all_threads=achieved / ceiling[all_threads],
                ceiling_tok_s=ceiling[threads] / fpt,
            )

    # -- report -----------------------------------------------------------------------------------
    print(
        f"\nSmolLM2-135M ({params / 1e6:.1f}M params, {args.dtype}), {args.problems} basic_arithmetic problems, "
        f"max {args.max_tokens} tokens, T=0.8; vLLM {vllm.__version__} (startup {results['vllm_startup_s']:.0f} s)"
    )
    print(
        f"threads: transformers {hf_threads}, vLLM worker {vl_threads or '?'}; "
        f"matmul ceiling ({results['ceiling']['device']}, {args.dtype} 2048^3): "
        + ", ".join(f"{k} thread{'s' if k > 1 else ''} {v / 1e9:.1f} GFLOP/s" for k, v in sorted(ceiling.items()))
    )
    print("(of ceiling: the model FLOP/s an engine reached / matmul FLOP/s at the thread count it ran on)")
    print(
        f"\nbest-of-N{'':9}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'GFLOP/s':>9}{'of ceiling':>11}{'ceiling tok/s':>14}"
    )
    for n, row in results["best_of_n"].items():
        for name in ("transformers", "vllm"):
            r = row[name]
            print(
                f"  N={n:<3} {name:12}{r['tokens']:>8}{r['seconds']:>9.1f}{r['tok_s']:>9.1f}"
                f"{r['achieved_flop_s'] / 1e9:>9.2f}{r['ceiling_fraction']:>10.1%}{r['ceiling_tok_s']:>14.0f}"
            )
        print(f"  N={n:<3} ratio vLLM / transformers tok/s: {row['ratio']:.2f}x")
    if results["dvts"]:
        print(
            f"\nDVTS N={args.dvts_n} M={args.beam_width} (PRM {results['prm']}){'':4}{'wall s':>8}{'policy s':>9}{'PRM s':>7}"
            f"{'gen tok':>9}{'prefill tok':>12}"
        )
        for name, r in results["dvts"].items():
            print(
                f"  {name:32}{r['wall_s']:>8.1f}{r['policy_s']:>9.1f}{r['prm_s']:>7.1f}{r['generated_tokens']:>9}{r['prefill_tokens']:>12}"
            )
        on, off = results["dvts"]["vllm_prefix_cache_on"], results["dvts"]["vllm_prefix_cache_off"]
        print(
            f"  prefix caching off / on: wall {off['wall_s'] / on['wall_s']:.2f}x, policy time {off['policy_s'] / on['policy_s']:.2f}x"
        )
        if "transformers" in results["dvts"]:
            hf_d = results["dvts"]["transformers"]
            print(
                f"  transformers / vLLM (cache on): wall {hf_d['wall_s'] / on['wall_s']:.2f}x, "
                f"policy time {hf_d['policy_s'] / on['policy_s']:.2f}x"
            )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
