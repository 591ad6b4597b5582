"""bf16 linear layers whose weights are packed once for oneDNN, for inference on a CPU.

`F.linear` in bf16 on a CPU hands oneDNN a plain weight, which it reorders into its blocked (AMX)
layout on every call. Packing each weight once when the model is loaded makes decode-sized matmuls
faster, the LM head most, with the same output bits (`bench/roofline.py` times both).
These are the ops `torch.compile` itself uses for frozen CPU linears (`torch.ops.mkldnn`).
"""

from __future__ import annotations

import torch
from torch import nn


class PackedLinear(nn.Module):
    """An `nn.Linear` (bf16, CPU) computed from a weight packed once; `weight` stays for readers."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_pack(model: nn.Module) -> bool:
    """bf16 weights on a CPU with native bf16, and a torch that has the packed-linear ops."""
    from synth.models import cpu_has_native_bf16

    param = next(model.parameters())
    ops = hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    return param.device.type == "cpu" and param.dtype == torch.bfloat16 and ops and cpu_has_native_bf16()


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
