"""The dtype a PRM scores in: `auto` is bfloat16 where the hardware multiplies bf16 natively, else float32.

PRM scoring is a prefill (compute-bound): on a CPU with AMX / AVX512-BF16 the bundled PRM scores 2.9x
faster in bf16 than in fp32 (bench/prm_throughput.py), with step scores within 0.015 of fp32's.
"""

from __future__ import annotations

from functools import lru_cache

import torch

NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 on this CPU (Linux /proc/cpuinfo) and oneDNN built with bf16."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    return native and bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """`auto`, `float32`, `bfloat16` or `float16` -> a torch dtype for `device`."""
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in NAMES:
        raise ValueError(f"PRM dtype {name!r}: use auto, {', '.join(NAMES)}")
    return NAMES[name]
