"""SDPA over grouped KV heads, masked, without copying the KV heads (prefill and scoring on a CPU).

transformers' SDPA lets torch share each KV head among its query heads (`enable_gqa`) only without an attention
mask on a CPU; with one (every padded batch: the policy's prefills, the PRM's scoring) it first copies every KV
head to each of its query heads (`repeat_kv`), SmolLM2's 3 heads to 9, at every layer. torch's CPU kernel takes the
mask with `enable_gqa` and gives the same bits. `bench/prm_throughput.py` and `bench/overlap.py
--kv-heads-copied` time both.
"""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "synth_sdpa_gqa"
SHARES_KV_HEADS = True  # benches turn it off to time transformers' copy in the same run


def gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function: masked multi-token attention on a CPU with `enable_gqa`; transformers'
    SDPA for everything else (no mask, one query token, GPUs, position biases)."""
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    plain = not any(kwargs.get(k) for k in ("position_bias", "softcap", "output_attentions"))
    cpu_masked = query.device.type == "cpu" and attention_mask is not None and query.shape[2] > 1
    if not (SHARES_KV_HEADS and cpu_masked and grouped and plain):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    # with a mask transformers' SDPA is not causal: the mask says which keys each query sees
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def use_gqa_sdpa(model) -> bool:
    """Switch `model` from SDPA to `gqa_sdpa_attention` (see `use_attention`)."""
    return use_attention(model, NAME, gqa_sdpa_attention, from_names=(NAME,))


def use_attention(model, name: str, function, from_names: tuple[str, ...] = ()) -> bool:
    """Register `function` as transformers attention `name` (masks as SDPA builds them) and switch `model` to it;
    False, and the model left as it is, where its attention is not SDPA (or one of `from_names`) or does not go
    through transformers' attention interface."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if model.config._attn_implementation not in ("sdpa", *from_names):
        return False
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    model.set_attn_implementation(name)
    return model.config._attn_implementation == name
