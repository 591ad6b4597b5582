"""Decode attention over each prompt's KV held once for all of its samples (shared-prefix attention).

The engine prefills each distinct prompt once. Copying that KV to every sample's row would make every decode
step read n copies of the prompt (best-of-N at N=64: 64). Instead the prompts' KV stays one tensor per layer,
(prompts, kv heads, tokens, head dim), each row's cache holds only what it generated, and a decode step attends
to the two parts separately and merges them by their log-sum-exp: softmax over the union, exact up to rounding.
A prompt's part is one attention call for all its samples (their queries stacked as query positions), so its
KV is read once per step. `bench/shared_prefix.py` times decoding both ways.

transformers runs it as a registered attention implementation (`AttentionInterface`): calls that pass no
`shared_prefix` (prefill, training, anyone else's forward) get SDPA (`gqa_sdpa`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from synth.generate.gqa_sdpa import NAME as GQA_NAME
from synth.generate.gqa_sdpa import gqa_sdpa_attention, use_attention
from synth.generate.kv_stash import Entry, positions

NAME = "synth_shared_prefix"
_UNSUPPORTED = ("softcap", "s_aux", "sliding_window")  # attention kwargs this merge does not implement


@dataclass
class SharedPrefix:
    """The prompts' KV of a decode batch and which prompt each row continues."""

    keys: list[torch.Tensor]  # per layer: (prompts, kv heads, tokens, head dim), prompts left padded
    values: list[torch.Tensor]
    mask: torch.Tensor  # (prompts, tokens) bool: the positions each prompt attends
    group: torch.Tensor  # (rows,) long: the prompt each row continues
    _layout: tuple = field(init=False, repr=False)
    _suffix: tuple = field(init=False, repr=False, default=(None, None))

    def __post_init__(self):
        group = self.group.tolist()
        groups, slot_of, count = len(self.mask), [], [0] * len(self.mask)
        for g in group:
            slot_of.append(count[g])
            count[g] += 1
        width = max(count, default=1) or 1
        dev, dtype = self.mask.device, self.keys[0].dtype
        bias = torch.zeros(self.mask.shape, device=dev, dtype=dtype).masked_fill(~self.mask, float("-inf"))
        # rows in prompt order, `width` per prompt (a prefill's fan-out): their queries regroup by a reshape;
        # any other order gathers them into (prompt, slot) places and scatters the outputs back
        slots = flat = None
        if group != [g for g in range(groups) for _ in range(width)]:
            places = [[len(group)] * width for _ in range(groups)]  # index len(group): a zero query
            for row, (g, s) in enumerate(zip(group, slot_of)):
                places[g][s] = row
            slots = torch.tensor(places, device=dev)
            flat = torch.tensor([g * width + s for g, s in zip(group, slot_of)], device=dev)
        self._layout = (width, slots, flat, bias[:, None, None, :])

    @classmethod
    def of_prefill(cls, cache, mask: torch.Tensor, group: torch.Tensor) -> SharedPrefix:
        """The prompts just prefilled into `cache` (one row each, 2D `mask`), continued by rows `group`."""
        return cls([x.keys for x in cache.layers], [x.values for x in cache.layers], mask.bool(), group)

    def select(self, index: torch.Tensor) -> SharedPrefix:
        """Rows `index` of this batch; prompts no row continues any longer are dropped."""
        group = self.group[index]
        used, group = torch.unique(group, sorted=True, return_inverse=True)
        if len(used) == len(self.mask):
            return SharedPrefix(self.keys, self.values, self.mask, group)
        mask = self.mask[used]
        start = int(mask.any(0).int().argmax())  # leading columns no remaining prompt attends
        pick = lambda xs: [x.index_select(0, used)[:, :, start:] for x in xs]  # noqa: E731
        return SharedPrefix(pick(self.keys), pick(self.values), mask[:, start:], group)

    def joined(self, other: SharedPrefix) -> SharedPrefix:
        """These rows then `other`'s: both batches' prompts, left padded to the longer."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        return SharedPrefix(
            [_stacked(a, b, width) for a, b in zip(self.keys, other.keys)],
            [_stacked(a, b, width) for a, b in zip(self.values, other.values)],
            _stacked(self.mask[:, None, :, None], other.mask[:, None, :, None], width)[:, 0, :, 0],
            torch.cat([self.group, other.group + len(self.mask)]),
        )

    def row_entry(self, cache, row: int, attended: torch.Tensor) -> Entry:
        """A copy of row `row`'s whole KV: its prompt's, then its own in `cache` (positions `attended`)."""
        g = int(self.group[row])
        head, tail = positions(self.mask[g]), positions(attended)
        own = cache.layers[0].keys is not None and bool(attended.any())  # it fed a token (else: its prompt's only)
        keys, values = [], []
        for pk, pv, layer in zip(self.keys, self.values, cache.layers):  # torch.cat copies, even of one part
            keys.append(torch.cat([pk[g][:, head], *([layer.keys[row][:, tail]] if own else [])], dim=1))
            values.append(torch.cat([pv[g][:, head], *([layer.values[row][:, tail]] if own else [])], dim=1))
        return Entry(keys, values)

    def attend(self, layer: int, query, key, value, attention_mask, scale: float) -> torch.Tensor:
        """Attention output (rows, 1, heads, head dim) of one decoded token per row over its prompt's KV
        (this layer's) and its own (`key`, `value`: the rows' cache, `attention_mask` its 4D SDPA mask)."""
        rows, heads, _, dim = query.shape
        kv_heads = key.shape[1]
        q = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # a kv head's query heads as query positions
        out_own, lse_own = _attention(q, key, value, self._suffix_bias(attention_mask, query.dtype), scale)
        width, slots, flat, bias = self._layout
        groups, r = len(self.mask), q.shape[2]
        if slots is None:
            qp = q if width == 1 else q.view(groups, width, kv_heads, r, dim).transpose(1, 2)
        else:
            qp = torch.cat([q, q.new_zeros(1, *q.shape[1:])])[slots].transpose(1, 2)  # (prompts, kv, width, r, dim)
        out_pre, lse_pre = _attention(
            qp.reshape(groups, kv_heads, -1, dim), self.keys[layer], self.values[layer], bias, scale
        )
        if width > 1:
            out_pre = out_pre.view(groups, kv_heads, width, r, dim).transpose(1, 2).reshape(-1, kv_heads, r, dim)
            lse_pre = lse_pre.view(groups, kv_heads, width, r).transpose(1, 2).reshape(-1, kv_heads, r)
        if flat is not None:
            out_pre, lse_pre = out_pre[flat], lse_pre[flat]
        # softmax over both parts: o_own + sigmoid(lse_pre - lse_own) (o_pre - o_own); both lse finite (a row's
        # own part holds at least the token it just fed, its prompt at least one token)
        w_pre = torch.sigmoid(lse_pre - lse_own)[..., None]
        out = torch.lerp(out_own.float(), out_pre.float(), w_pre)
        return out.to(query.dtype).reshape(rows, 1, heads, dim)

    def _suffix_bias(self, attention_mask, dtype) -> torch.Tensor | None:
        """The rows' 4D boolean SDPA mask as an additive one, converted once per forward (every layer gets it)."""
        if attention_mask is None or attention_mask.dtype != torch.bool:
            return attention_mask
        source, bias = self._suffix
        if source is not attention_mask:
            bias = torch.zeros(attention_mask.shape, device=attention_mask.device, dtype=dtype)
            bias = bias.masked_fill(~attention_mask, float("-inf"))
            self._suffix = (attention_mask, bias)
        return bias


def _attention(q, k, v, bias, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-causal attention of queries `q` (..., L, d) over `k`, `v` with additive `bias`: (output, log-sum-exp
    of the scaled scores, float32). On a CPU, torch's flash kernel, which returns both; elsewhere the math."""
    if q.device.type == "cpu" and not _MATH_ONLY:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias, scale=scale
        )
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.float()
    lse = s.logsumexp(-1)
    return ((s - lse[..., None]).exp() @ v.float()).to(q.dtype), lse


def _stacked(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """(prompts, heads, tokens, dim) tensors `a` then `b` in one, each left padded with zeros (False) to `width`
    tokens: one copy of each (padding, then concatenating, would copy both twice)."""
    out = a.new_empty((len(a) + len(b), a.shape[1], width, a.shape[3]))
    for dst, src in ((out[: len(a)], a), (out[len(a) :], b)):
        pad = width - src.shape[2]
        dst[:, :, :pad].zero_()
        dst[:, :, pad:] = src
    return out


_MATH_ONLY = False  # tests set it to check the math path against the kernel


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function: `SharedPrefix.attend` for decode steps that pass `shared_prefix`,
    SDPA (`gqa_sdpa_attention`) for everything else."""
    prefix = kwargs.pop("shared_prefix", None)
    if prefix is None or query.shape[2] != 1:
        return gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    unsupported = [name for name in _UNSUPPORTED if kwargs.get(name) is not None]
    if unsupported:
        raise ValueError(f"shared-prefix attention does not implement {', '.join(unsupported)}")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return prefix.attend(module.layer_idx, query, key, value, attention_mask, scale), None


def use_shared_prefix(model) -> bool:
    """Switch `model` to shared-prefix attention (SDPA wherever no `shared_prefix` is passed); False, and the
    model left as it is, where its attention is not SDPA or does not go through transformers' interface."""
    return use_attention(model, NAME, shared_prefix_attention, from_names=(NAME, GQA_NAME))
