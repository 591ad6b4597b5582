"""Served engines against in-process ones, on the same work (the served half of bench/engine_compare.py).

    .venv-vllm/bin/python bench/serving_compare.py [--problems 8] [--max-tokens 96] [--ns 16,64] [--dvts-n 16]

Needs vLLM (`make install-vllm`). One run, one table each:
  1. best-of-N tokens/s: in-process vLLM (`VLLMPolicy`) vs `vllm serve` + `engine: openai` (`OpenAIPolicy`),
     same prompts, N, max tokens, T=0.8 (the server is started here, on 127.0.0.1);
  2. PRM steps/s on the same sentence steps (the best-of-N completions, cut): synth's transformers scorer
     (prefix sharing) vs vLLM's pooling runner in this process, both in --prm-dtype;
  3. DVTS at N=--dvts-n (sentence steps, `default-sentence`, M=2) with the policy on in-process vLLM and the
     PRM on transformers vs on vLLM: wall time, and the PRM's share of it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_compare import TimedPolicy, best_of_n_run  # noqa: E402
from heldout import tree_search  # noqa: E402

from synth.generate.engine import SamplingParams  # noqa: E402
from synth.generate.search import dvts  # noqa: E402
from synth.models import resolve_model  # noqa: E402
from synth.problems import PoolConfig, load_pool  # noqa: E402
from synth.steps import StepRule  # noqa: E402


class TimedPRM:
    def __init__(self, prm):
        self.prm, self.seconds, self.steps = prm, 0.0, 0
        self.step_cut = getattr(prm, "step_cut", None)

    def score(self, problems, steps):
        t = time.perf_counter()
        out = self.prm.score(problems, steps)
        self.seconds += time.perf_counter() - t
        self.steps += sum(len(s) for s in steps)
        return out


def serve(model: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "VLLM_MAX_STOP_STRINGS": "8"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "4096",
        "--max-num-batched-tokens",
        "4096",
        "--no-enable-chunked-prefill",
        "--kv-cache-memory-bytes",
        str(4 << 30),
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"vllm serve did not come up: see {log}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--ns", default="16,64")
    ap.add_argument("--dvts-n", type=int, default=16)
    ap.add_argument("--prm-dtype", default="bfloat16")
    ap.add_argument("--port", type=int, default=8021)
    ap.add_argument("--out", default="runs/bench-serving")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from synth.generate.openai_engine import OpenAIConfig, OpenAIPolicy
    from synth.generate.vllm import VLLMPolicy, release_engines
    from synth.prm.load import load_prm
    from synth.prm.vllm_prm import VLLMPRM

    path = resolve_model("smollm2-135m")
    problems = load_pool(PoolConfig(tasks=["basic_arithmetic"], num_problems=args.problems, seed=1000))
    ns = [int(n) for n in args.ns.split(",")]

    vllm_policy = VLLMPolicy(path)
    prompts = [vllm_policy.chat_prompt(p.problem) for p in problems]
    inproc = {n: best_of_n_run(vllm_policy, prompts, n, args.max_tokens) for n in ns}
    texts = [
        c.text for c in vllm_policy.generate(prompts[:1], SamplingParams(n=8, max_tokens=args.max_tokens, seed=1))[0]
    ]
    rule = StepRule("sentence")
    pairs = [(problems[0].problem, rule.steps(t) or [t]) for t in texts] * 8

    # DVTS with the PRM on transformers, then on vLLM (policy: in-process vLLM both times)
    search = tree_search("dvts", args.dvts_n, max_tokens=args.max_tokens)
    dvts_runs = {}
    hf_prm = load_prm("default-sentence", dtype=args.prm_dtype)
    vllm_prm = VLLMPRM("default-sentence", dtype=args.prm_dtype)
    for name, prm in (("transformers", hf_prm), ("vLLM", vllm_prm)):
        timed_policy, timed_prm = TimedPolicy(vllm_policy), TimedPRM(prm)
        t = time.perf_counter()
        dvts(timed_policy, problems, search, seed=0, prm=timed_prm)
        dvts_runs[name] = (time.perf_counter() - t, timed_policy.seconds, timed_prm.seconds, timed_prm.steps)
    prm_rates = {}
    for name, prm in (("transformers (prefix sharing)", hf_prm), ("vLLM pooling", vllm_prm)):
        prm.score([p for p, _ in pairs[:4]], [s for _, s in pairs[:4]])  # warm up
        t = time.perf_counter()
        prm.score([p for p, _ in pairs], [s for _, s in pairs])
        prm_rates[name] = sum(len(s) for _, s in pairs) / (time.perf_counter() - t)
    del vllm_policy, vllm_prm
    release_engines()

    server = serve(path, args.port, out / "server.log")
    try:
        http = OpenAIPolicy(
            path, options=OpenAIConfig(base_url=[f"http://127.0.0.1:{args.port}/v1"], max_concurrency=128)
        )
        served = {n: best_of_n_run(http, prompts, n, args.max_tokens) for n in ns}
    finally:
        server.kill()

    print(f"\nbest-of-N, {args.problems} problems, {args.max_tokens} tokens, SmolLM2 fp32 on this CPU")
    print("| N | in-process vLLM tok/s | vllm serve + engine openai tok/s | HTTP / in-process |")
    print("|---|---|---|---|")
    for n in ns:
        a, b = inproc[n]["tok_s"], served[n]["tok_s"]
        print(f"| {n} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")
    print(f"\nPRM steps/s, {sum(len(s) for _, s in pairs)} sentence steps, default-sentence in {args.prm_dtype}")
    print("| scorer | steps/s |")
    print("|---|---|")
    for name, rate in prm_rates.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"\nDVTS N={args.dvts_n}, M=2, sentence steps, {args.problems} problems, policy on in-process vLLM")
    print("| PRM on | wall s | policy s | PRM s | PRM share of wall | steps scored |")
    print("|---|---|---|---|---|---|")
    for name, (wall, pol, prm_s, steps) in dvts_runs.items():
        print(f"| {name} | {wall:.1f} | {pol:.1f} | {prm_s:.1f} | {prm_s / wall:.2f} | {steps} |")


if __name__ == "__main__":
    main()
