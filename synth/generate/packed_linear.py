"""Linear layers whose weights are packed once for oneDNN, for inference on a CPU (fp32, and bf16 where
the CPU has native bf16).

`F.linear` on a CPU hands its matmul a plain weight: in bf16 oneDNN reorders it into its blocked (AMX)
layout on every call, and in fp32 the plain GEMM is slow at decode sizes (a few to 64 rows). Packing each
weight once when a model is loaded makes those matmuls faster, the LM head most (`bench/roofline.py`
times both): bf16 with the same output bits, fp32 equal up to rounding (another summation order).
These are the ops `torch.compile` itself uses for frozen CPU linears (`torch.ops.mkldnn`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear(nn.Module):
    """An `nn.Linear` computed from its weight packed once (fp32 or bf16, CPU); `weight` stays for readers.
    Moved to another device or dtype (`.to`), it packs again, or runs `F.linear` where it cannot pack."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self._pack()

    def _pack(self) -> None:
        w = self.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, None) if packable(w) else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._pack()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def packable(weight: torch.Tensor) -> bool:
    """fp32 on a CPU with oneDNN, or bf16 on a CPU with native bf16, and a torch that has the ops."""
    from synth.models import cpu_has_native_bf16

    ops = hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    if weight.device.type != "cpu" or not ops or not torch.backends.mkldnn.is_available():
        return False
    return weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and cpu_has_native_bf16())


def can_pack(model: nn.Module) -> bool:
    """Whether `pack_linears` packs this model's linears (its parameters' dtype and device)."""
    return packable(next(model.parameters()))


def pack_linears(model: nn.Module) -> int:
    """Swap every `nn.Linear` of an inference `model` for a `PackedLinear` where `can_pack`; returns how many."""
    if not can_pack(model):
        return 0
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    count = 0
    for parent, name, child in swaps:
        if type(child) is nn.Linear:
            setattr(parent, name, PackedLinear(child))
            count += 1
    return count
