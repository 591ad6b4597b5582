"""Prefix sharing for PRM inputs: sequences with a long common token prefix read it once.

Beam search and DVTS score M candidates per parent, and every candidate repeats the parent's
path (the problem and all earlier steps). Grouped by that shared prefix, the prefix goes through
the model once; its KV cache is then fanned out to the members, which only run their own suffix.
A causal model computes the same value at every token either way.
"""

from __future__ import annotations

from dataclasses import dataclass

# Shorter shared prefixes are not worth a second forward pass.
MIN_SHARED_TOKENS = 8


@dataclass
class Group:
    prefix_len: int  # tokens every member shares (read once)
    members: list[int]  # sequence indices


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_prefix(sequences: list[list[int]], min_shared: int = MIN_SHARED_TOKENS) -> list[Group]:
    """Groups covering every sequence once, each with the prefix its members share.

    Sequences are visited in lexicographic order (prefix-sharing ones are adjacent); a sequence
    joins the current group when the tokens saved (shared prefix x extra members) do not shrink.
    A sequence alone forms a group whose prefix is all of it.
    """
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    groups: list[Group] = []
    for i in order:
        seq = sequences[i]
        if groups:
            g = groups[-1]
            shared = min(_common(sequences[g.members[-1]], seq), g.prefix_len if len(g.members) > 1 else len(seq))
            if shared >= min_shared and shared * len(g.members) >= g.prefix_len * (len(g.members) - 1):
                g.prefix_len = shared
                g.members.append(i)
                continue
        groups.append(Group(len(seq), [i]))
    return groups
