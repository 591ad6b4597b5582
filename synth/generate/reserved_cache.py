"""A KV cache that writes each decoded token into room reserved up front.

transformers' `DynamicLayer` appends with `torch.cat`, which copies the whole cache at every token of
every layer (`bench/roofline.py` times an append both ways). A
`ReservedLayer` allocates `capacity` positions at its first update and writes new tokens in place;
`keys` / `values` are views of the filled part, so everything that reads a `DynamicLayer` reads it.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A `DynamicLayer` with room for `capacity` positions (it grows, by doubling, past them)."""

    def __init__(self, capacity: int = 0):
        self.capacity = capacity
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0
        super().__init__()

    # `keys` / `values` stay assignable, as transformers' own methods assign them
    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self._n]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._k = value
        self._n = 0 if value is None or value.dim() < 2 else value.shape[-2]

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self._n]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._v = value

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._k = self._v = None
        self._n = 0
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self._n, key_states.shape[-2]
        if self._k is None or self._k.shape[0] != key_states.shape[0] or n + add > self._k.shape[-2]:
            room = max(self.capacity, n + add, 2 * self._k.shape[-2] if self._k is not None else 0)
            self._k, self._v = self._grown(self._k, key_states, room), self._grown(self._v, value_states, room)
        self._k[:, :, n : n + add] = key_states
        self._v[:, :, n : n + add] = value_states
        self._n = n + add
        return self.keys, self.values

    def _grown(self, old: torch.Tensor | None, new: torch.Tensor, room: int) -> torch.Tensor:
        b, h, _, d = new.shape
        buf = new.new_empty((b, h, room, d))
        if old is not None and self._n:
            buf[:, :, : self._n] = old[:, :, : self._n]
        return buf

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (fewer rows: compacted in place; more, a fan-out: a new buffer of the same room)."""
        if not self._n:
            return
        n, m = self._n, len(indices)
        for name in ("_k", "_v"):
            buf = getattr(self, name)
            # a copy (a faster gather than buf[indices]): safe to write back
            rows = buf[:, :, :n].index_select(0, indices)
            if m > buf.shape[0]:
                buf = buf.new_empty((m, *buf.shape[1:]))
            buf = buf[:m]
            buf[:, :, :n] = rows
            setattr(self, name, buf)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        self._n = max(0, self._n + tokens_to_remove)


def reserved_cache(config, capacity: int) -> DynamicCache:
    """A `DynamicCache` for `config` whose full-attention layers reserve `capacity` positions
    (sliding-window layers stay as transformers makes them)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(capacity) if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


def join_rows(
    a: DynamicCache, mask_a: torch.Tensor, b: DynamicCache, mask_b: torch.Tensor, room: int
) -> tuple[DynamicCache, torch.Tensor]:
    """The rows of reserved caches `a` and `b` (with their 2D attention masks) in one cache, `a`'s first.

    Rows are right-aligned, so every row's next token goes to the same column; left padding is zeros
    (masked out, and finite, so attention weights of 0 give 0), and leading columns no row attends are
    dropped. The cache has room for `room` more positions; it reuses `a`'s layer objects.
    """
    wa, wb = mask_a.shape[1], mask_b.shape[1]
    width = max(wa, wb)
    mask = torch.cat(
        [torch.nn.functional.pad(mask_a, (width - wa, 0)), torch.nn.functional.pad(mask_b, (width - wb, 0))]
    )
    start = int(mask.any(0).int().argmax())  # the first column some row attends
    mask, kept = mask[:, start:], width - start
    rows_a = mask_a.shape[0]
    for la, lb in zip(a.layers, b.layers):
        if la._k is None and lb._k is None:  # neither has decoded a token yet: the first update sizes the buffer
            continue
        for name in ("_k", "_v"):
            xa, xb = _filled(la, name, rows_a, lb), _filled(lb, name, mask_b.shape[0], la)
            buf = xa.new_empty((rows_a + xb.shape[0], xa.shape[1], kept + room, xa.shape[3]))
            for dst, src in ((buf[:rows_a], xa), (buf[rows_a:], xb)):
                at = width - src.shape[2] - start  # where src's first column lands (< 0: its head is dropped)
                if at >= 0:
                    dst[:, :, :at].zero_()
                    dst[:, :, at:kept] = src
                else:
                    dst[:, :, :kept] = src[:, :, -at:]
            setattr(la, name, buf)
        la._n = kept
    return a, mask


def _filled(layer: ReservedLayer, name: str, rows: int, other: ReservedLayer) -> torch.Tensor:
    """The filled part of `layer`'s buffer `name`; (rows, heads, 0, dim) like `other`'s when it has none."""
    buf = getattr(layer, name)
    if buf is None:
        ref = getattr(other, name)
        return ref.new_empty((rows, ref.shape[1], 0, ref.shape[3]))
    return buf[:, :, : layer._n]
