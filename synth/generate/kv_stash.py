"""KV caches kept from one engine call to the next, found by longest token prefix.

Beam search and DVTS extend last iteration's continuations: the new prompt is the old prompt
plus a step. Reusing the KV of the longest stored token prefix skips prefilling the whole path
again; only the new tokens run. A policy's stash also remembers the ids of the texts it kept
(`texts`), so a prompt that extends one is encoded in the kept tokens (`token_memo`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from synth.generate.token_memo import TokenMemo

_calling = threading.local()


def caller() -> int:
    """Whose KV an engine keeps: the thread that made the call (a `Worker` runs calls for other threads)."""
    return getattr(_calling, "ident", None) or threading.get_ident()


@contextmanager
def calling_for(ident: int) -> Iterator[None]:
    """Run engine calls on this thread as if `ident` made them (their KV stashes are its)."""
    before = getattr(_calling, "ident", None)
    _calling.ident = ident
    try:
        yield
    finally:
        _calling.ident = before


@dataclass
class Entry:
    keys: list[torch.Tensor]  # per layer: (kv heads, tokens, head dim)
    values: list[torch.Tensor]

    @classmethod
    def of_row(cls, cache, row: int, attended: torch.Tensor, **fields) -> Entry:
        """A copy of row `row` of `cache`, its attended positions only (`attended`: the row's 2D mask)."""
        at = positions(attended)
        return cls(
            [copy_at(layer.keys[row], at) for layer in cache.layers],
            [copy_at(layer.values[row], at) for layer in cache.layers],
            **fields,
        )


def positions(attended: torch.Tensor) -> slice | torch.Tensor:
    """The token positions a row's mask attends: a slice where they are one run (a row's usually are: left
    padding, then its tokens), else their indices. Found once per row; a boolean index per layer would
    search the mask again for every tensor."""
    at = attended.nonzero().flatten()
    if not len(at):
        return slice(0, 0)
    first, last = int(at[0]), int(at[-1])
    return slice(first, last + 1) if last - first + 1 == len(at) else at


def copy_at(x: torch.Tensor, at: slice | torch.Tensor) -> torch.Tensor:
    """A copy of x's positions `at` along dim 1 (kv heads, tokens, head dim): never a view of a live cache."""
    return x[:, at].clone() if isinstance(at, slice) else x.index_select(1, at)


def fill_kept(cache, reused: list[tuple[Entry | None, int]]) -> int:
    """Write each row's kept KV (the first n tokens of its entry) into the empty `cache`, left padded with
    zeros to the longest; returns that width (0: nothing kept, the cache is left empty)."""
    kept = max(n for _, n in reused)
    if not kept:
        return 0
    some = next(e for e, n in reused if n)
    for layer in range(len(cache.layers)):
        ref = some.keys[layer]
        k = ref.new_zeros((len(reused), ref.shape[0], kept, ref.shape[2]))
        v = torch.zeros_like(k)
        for row, (entry, n) in enumerate(reused):
            if n:
                k[row, :, kept - n :] = entry.keys[layer][:, :n]
                v[row, :, kept - n :] = entry.values[layer][:, :n]
        cache.update(k, v, layer)
    return kept


# What a stash may hold: SmolLM2-135M keeps 46 KB of fp32 KV per token, so ~46k tokens (one
# beam-search iteration of 256 beams over ~180-token paths). Sequences past the budget are not kept.
DEFAULT_MAX_BYTES = 2 << 30


class KVStash:
    """Per-sequence KV caches under a token trie; `match` finds the longest stored prefix of a prompt."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.clear()

    def clear(self) -> None:
        self._trie: dict = {}
        self.entries: list[Entry] = []
        self.bytes = 0
        self.texts = TokenMemo()  # a policy's prompts and kept continuations, as text

    def put(self, ids: list[int], entry: Entry) -> bool:
        """Keep entry under ids; False (not kept) when it would exceed the byte budget."""
        size = sum(x.numel() * x.element_size() for x in entry.keys + entry.values)
        if self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        node = self._trie
        for tok in ids:
            node = node.setdefault(tok, {})
            node.setdefault(None, len(self.entries))  # any entry passing through holds this prefix's KV
        self.entries.append(entry)
        return True

    def match(self, ids: list[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with ids, and that prefix's length (< len(ids):
        at least one token must run to give the next token's logits)."""
        node, best, length = self._trie, None, 0
        for depth, tok in enumerate(ids[:-1]):
            node = node.get(tok)
            if node is None:
                break
            best, length = node[None], depth + 1
        return (self.entries[best], length) if best is not None else (None, 0)
