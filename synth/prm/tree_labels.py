"""Step labels read off the search trees a generate run stored: no rollouts.

Every final trace of a beam search, DVTS, particle filtering or MCTS row ends in a leaf of the row's tree.
A node's soft label is the fraction of verified finished final leaves below it, resting on as many leaves
as there are below it (its `support`); for MCTS with verified rollouts, a visited node's backed-up value (its
Q-value, resting on its visits) instead. Each finished final trace becomes a stepwise row of the steps on its path: the last
step labelled by the trace's own verification, the others by their nodes (Q-values only where MCTS valued
them by verified rollouts, `mcts.rollout`: a Q-value made of the PRM's own scores is no label), cut before the first node that
rests on fewer than `min_support` leaves (or visits), so every label has the support asked for.
"""

from __future__ import annotations

import json
from typing import Any


def tree_label_rows(
    rows: list[dict[str, Any]], min_support: int = 2, step_cut: str = "delimiter"
) -> list[dict[str, Any]]:
    """Stepwise label rows (the `labels` kind) from the trees of generate rows; rows without a tree give none."""
    out = []
    for row in rows:
        if not row.get("tree") or not row.get("leaves"):
            continue
        nodes = {n["id"]: n for n in json.loads(row["tree"])}
        counts, right = _leaf_counts(nodes, row)
        for i, leaf in enumerate(row["leaves"]):
            if leaf is None or not row["finished"][i] or row["verified"][i] is None or leaf not in nodes:
                continue
            path = _path(nodes, leaf)
            steps, soft, support = [], [], []
            for node in path[:-1]:
                q, n = _label(node, counts, right)
                if n < min_support:
                    break
                steps.append(node["step"])
                soft.append(q)
                support.append(n)
            else:
                steps.append(path[-1]["step"])
                soft.append(float(bool(row["verified"][i])))
                support.append(1)
            if not steps:
                continue
            out.append(
                {
                    "id": f"{row['id']}#{i}",
                    "prompt": row["problem"],
                    "completions": steps,
                    "labels": [s > 0 for s in soft],
                    "soft_labels": soft,
                    "support": support,
                    "problem_id": row["id"],
                    "verified": bool(row["verified"][i]),
                    "rollouts": 0,
                    "policy": row.get("model"),
                    "step_cut": step_cut,
                    "source": "tree",
                }
            )
    return out


def _leaf_counts(nodes: dict[int, dict], row: dict) -> tuple[dict[int, int], dict[int, int]]:
    """Per node: the finished, graded final leaves below it, and how many of them were verified."""
    counts: dict[int, int] = {}
    right: dict[int, int] = {}
    for i, leaf in enumerate(row["leaves"]):
        if leaf is None or not row["finished"][i] or row["verified"][i] is None or leaf not in nodes:
            continue
        for node in _path(nodes, leaf):
            counts[node["id"]] = counts.get(node["id"], 0) + 1
            right[node["id"]] = right.get(node["id"], 0) + bool(row["verified"][i])
    return counts, right


def _label(node: dict, counts: dict[int, int], right: dict[int, int]) -> tuple[float, int]:
    if node.get("value_kind") == "outcome" and node.get("visits"):  # MCTS with rollouts: the backed-up Q-value
        return float(node["value"]), int(node["visits"])
    n = counts.get(node["id"], 0)
    return (right.get(node["id"], 0) / n if n else 0.0), n


def _path(nodes: dict[int, dict], leaf: int) -> list[dict]:
    """The non-empty steps from the root to `leaf` (the root holds no step)."""
    out, node = [], nodes[leaf]
    while node["parent"] is not None:
        if node["step"]:
            out.append(node)
        node = nodes[node["parent"]]
    return out[::-1]
