"""Token ids of texts an engine fed, found by longest text prefix.

A tree search's next prompt is a kept sequence's text plus a step. Tokenizing that whole text again can
tokenize the old part differently from how the policy wrote it (a step that starts with "\\n\\n" after the
chat template's trailing "\\n" becomes one "\\n\\n\\n" token), and then the kept KV no longer matches it.
Encoding the prompt as the kept sequence's own ids plus its new text's keeps every path in the tokens the
policy wrote, and only the new text is tokenized.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable


class TokenMemo:
    def __init__(self) -> None:
        self._ids: dict[str, list[int]] = {}
        self._sorted: list[str] | None = []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, text: str, ids: list[int]) -> None:
        """Remember that `ids` spell `text` (the first ids given for a text stay)."""
        if text and text not in self._ids:
            self._ids[text] = list(ids)
            self._sorted = None  # sorted again at the next lookup: a call adds many texts, then looks up many

    def longest_prefix(self, text: str) -> str | None:
        """The longest remembered text that `text` starts with (None: none)."""
        if self._sorted is None:
            self._sorted = sorted(self._ids)
        texts, query = self._sorted, text
        while True:
            i = bisect_right(texts, query) - 1
            if i < 0:
                return None
            best = texts[i]  # the largest remembered text <= query
            if query.startswith(best):
                return best  # a longer remembered prefix of query would sort between it and query
            # every remembered prefix of query sorts at or below `best`, so it is a prefix of their common part
            query = query[: _common_prefix(best, query)]

    def encode(self, text: str, tokenize: Callable[[str], list[int]]) -> list[int]:
        """Ids of `text`: those of its longest remembered prefix, then `tokenize` of the rest."""
        known = self.longest_prefix(text)
        if known is None:
            return tokenize(text)
        rest = text[len(known) :]
        return self._ids[known] + (tokenize(rest) if rest else [])


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of a and b (binary search on C-level comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
