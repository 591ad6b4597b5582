"""Filters over `synth generate` rows, flattened to one record per completion.

Every filter is a small function ``records -> records``; `run_filters` applies a list of them
and keeps a funnel of ``(name, kept, removed)`` per filter. Records are plain dicts (see
`flatten`), so a filter can be tested on hand-made rows.

Near-duplicates are found with MinHash over word n-grams (our own hashing, no extra dependency)
and confirmed with the exact Jaccard similarity of the two n-gram sets; they are looked for among
the completions of the same problem only, since two problems' solutions may legitimately share
their wording. Decontamination hashes word n-grams the same way.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from synth.evaluate import answer_key, majority_index

Record = dict[str, Any]
Filter = Callable[[list[Record]], list[Record]]

_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")  # words and single symbols: "2 + 3 = 5" keeps its operators
_U64 = np.uint64


class FilterError(ValueError):
    """A filter that cannot run on this data (e.g. a score threshold without PRM scores)."""


class Step(NamedTuple):
    name: str
    kept: int
    removed: int


@dataclass
class Filters:
    """The knobs of `synth filter`; every filter can be switched off."""

    correctness: Literal["auto", "verified", "majority", "none"] = field(
        default="auto",
        metadata={
            "help": (
                "Which completions count as correct. verified: verified against the gold answer; majority: answer equals the "
                "problem's majority answer (pools without gold); auto: verified where a gold answer exists, majority elsewhere; "
                "none: keep all (sft only)."
            )
        },
    )
    min_agreement: float = field(
        default=0.5,
        metadata={
            "help": "Majority filter: the majority answer must be given by at least this fraction of the problem's completions."
        },
    )
    require_finished: bool = field(default=True, metadata={"help": "Drop completions cut by the token or depth limit."})
    min_score: float | None = field(
        default=None,
        metadata={"help": "Drop completions whose aggregated PRM score is below this (needs a run with a PRM)."},
    )
    min_tokens: int = field(default=0, metadata={"help": "Drop completions with fewer generated tokens."})
    max_tokens: int | None = field(default=None, metadata={"help": "Drop completions with more generated tokens."})
    dedup: bool = field(
        default=True,
        metadata={
            "help": "Drop exact duplicates (same problem and completion after NFKC, lowercasing and whitespace collapsing)."
        },
    )
    near_dup_threshold: float | None = field(
        default=0.85,
        metadata={
            "help": "Drop a completion whose word n-gram Jaccard similarity to a kept completion of the same problem is at least this (null: off)."
        },
    )
    near_dup_ngram: int = field(default=5, metadata={"help": "Word n-gram size for near-duplicate detection."})
    near_dup_perms: int = field(
        default=64, metadata={"help": "MinHash permutations (more: fewer missed near-duplicates, slower)."}
    )
    top_k: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most k completions per problem (see rank_by); no two identical texts. For preference: pairs per problem."
        },
    )
    rank_by: Literal["auto", "score", "shortest"] = field(
        default="auto",
        metadata={
            "help": (
                "Which top_k completions are kept: score (highest PRM score first), shortest, or auto (score when every "
                "completion has one, else shortest)."
            )
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.near_dup_threshold is not None and not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near_dup_threshold must be in (0, 1] or null, got {self.near_dup_threshold}")
        if self.near_dup_ngram < 1 or self.near_dup_perms < 1:
            raise ValueError("near_dup_ngram and near_dup_perms must be >= 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")


# ---------------------------------------------------------------- records


def flatten(rows: Iterable[dict[str, Any]]) -> list[Record]:
    """One record per completion of each generate row, with the problem's majority answer and agreement."""
    out: list[Record] = []
    for row in rows:
        completions = list(row.get("completions") or [])
        n = len(completions)
        answers = _column(row, "answers", n)
        majority = row.get("majority_answer") if "majority_answer" in row else _majority(answers)
        key = answer_key(majority)
        agrees = [key is not None and answer_key(a) == key for a in answers]
        agreement = sum(agrees) / n if n else 0.0
        verified, tokens = _column(row, "verified", n), _column(row, "num_tokens", n)
        finished, scores = _column(row, "finished", n, True), _column(row, "scores", n)
        steps, step_scores = _column(row, "steps", n), _column(row, "step_scores", n)
        for i, text in enumerate(completions):
            out.append(
                {
                    "id": row["id"],
                    "index": i,
                    "problem": row.get("problem") or "",
                    "gold_answer": row.get("gold_answer"),
                    "source": row.get("source"),
                    "difficulty": row.get("difficulty"),
                    "completion": text or "",
                    "steps": list(steps[i] or []) or ([text] if text else []),
                    "answer": answers[i],
                    "verified": verified[i],
                    "num_tokens": int(tokens[i] or 0),
                    "finished": bool(finished[i]) if finished[i] is not None else True,
                    "score": scores[i],
                    "step_scores": step_scores[i],
                    "majority_answer": majority,
                    "agreement": agreement,
                    "agrees": agrees[i],
                    "model": row.get("model"),
                    "strategy": row.get("strategy"),
                    "n": row.get("n", n),
                }
            )
    return out


def _column(row: dict, name: str, n: int, default: Any = None) -> list:
    values = row.get(name)
    if values is None:
        return [default] * n
    values = list(values)
    if len(values) != n:
        raise FilterError(f"problem {row.get('id')!r}: {len(values)} {name} for {n} completions")
    return values


def _majority(answers: list) -> str | None:
    i = majority_index(answers)
    return answers[i] if i is not None else None


def normalize(text: str | None) -> str:
    """NFKC, lowercase, whitespace collapsed: the text key of exact deduplication."""
    return " ".join(unicodedata.normalize("NFKC", text or "").lower().split())


def correct_label(rec: Record, mode: str, min_agreement: float) -> bool | None:
    """Is this completion correct under `mode`? None: cannot tell (no gold, or no clear majority)."""
    if mode in ("verified", "auto") and rec["verified"] is not None:
        return bool(rec["verified"])
    if mode == "verified":
        return None
    if rec["majority_answer"] is None or rec["agreement"] < min_agreement:
        return None
    return bool(rec["agrees"])


# ---------------------------------------------------------------- filters


def run_filters(records: list[Record], filters: list[tuple[str, Filter]]) -> tuple[list[Record], list[Step]]:
    """Apply the filters in order; the funnel says what each removed."""
    funnel = []
    for name, fn in filters:
        before = len(records)
        records = fn(records)
        funnel.append(Step(name, len(records), before - len(records)))
    return records, funnel


def non_empty(records: list[Record]) -> list[Record]:
    return [r for r in records if r["completion"].strip()]


def finished_only(records: list[Record]) -> list[Record]:
    return [r for r in records if r["finished"]]


def verified_only(records: list[Record], keep_ungraded: bool = False) -> list[Record]:
    """verified True only; with `keep_ungraded`, completions without a gold answer (None) pass to the majority filter."""
    return [r for r in records if r["verified"] is True or (keep_ungraded and r["verified"] is None)]


def majority_agreement(records: list[Record], min_agreement: float, only_ungraded: bool = False) -> list[Record]:
    """Answer equals the problem's majority answer, given by >= `min_agreement` of its completions.

    With `only_ungraded`, completions that have a verification (gold answer) are left alone.
    """
    return [
        r
        for r in records
        if (only_ungraded and r["verified"] is not None) or (r["agrees"] and r["agreement"] >= min_agreement)
    ]


def score_threshold(records: list[Record], min_score: float) -> list[Record]:
    missing = sum(r["score"] is None for r in records)
    if missing:
        raise FilterError(
            f"min_score needs PRM scores, but {missing} of {len(records)} completions have none "
            "(the dataset has no `scores`: generate with a PRM, e.g. --prm default, or drop min_score)"
        )
    return [r for r in records if r["score"] >= min_score]


def length_limits(records: list[Record], min_tokens: int = 0, max_tokens: int | None = None) -> list[Record]:
    return [
        r for r in records if r["num_tokens"] >= min_tokens and (max_tokens is None or r["num_tokens"] <= max_tokens)
    ]


def exact_dedup(records: list[Record]) -> list[Record]:
    """Keep the first of each (problem, completion) pair equal after `normalize`."""
    seen: set[bytes] = set()
    out = []
    for r in records:
        key = hashlib.blake2b(
            f"{normalize(r['problem'])}\x1f{normalize(r['completion'])}".encode(), digest_size=16
        ).digest()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def near_dedup(records: list[Record], threshold: float = 0.85, ngram: int = 5, num_perm: int = 64) -> list[Record]:
    """Within each problem, drop a completion whose n-gram Jaccard similarity to a kept one is >= threshold.

    MinHash signatures pick the candidates (estimate >= threshold - 0.15); the exact Jaccard of the
    two n-gram sets decides, so the result does not depend on hash luck near the threshold.
    """
    hasher = _Hasher()
    drop: set[int] = set()
    for idx in _groups(records).values():
        shingles = [
            np.unique(hasher.ngrams(_TOKEN.findall(normalize(records[i]["completion"])), ngram, whole=True))
            for i in idx
        ]
        sigs = minhash(shingles, num_perm)
        kept: list[int] = []
        for j, i in enumerate(idx):
            if len(shingles[j]) and kept:
                est = (sigs[kept] == sigs[j]).mean(axis=1)
                if any(
                    _jaccard(shingles[j], shingles[kept[c]]) >= threshold
                    for c in np.flatnonzero(est >= threshold - 0.15)
                ):
                    drop.add(i)
                    continue
            kept.append(j)
    return [r for i, r in enumerate(records) if i not in drop]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def top_k_per_problem(records: list[Record], k: int, rank_by: str = "auto") -> list[Record]:
    """At most k per problem, distinct texts only: highest PRM score first (rank_by score, or auto when all
    have one), else shortest."""
    keep: set[int] = set()
    for idx in _groups(records).values():
        scored = all(records[i]["score"] is not None for i in idx)
        if rank_by == "score" and not scored:
            raise FilterError(
                f"rank_by score needs PRM scores, but problem {records[idx[0]]['id']!r} has completions without one"
            )
        if rank_by == "score" or (rank_by == "auto" and scored):
            order = sorted(idx, key=lambda i: (-records[i]["score"], records[i]["num_tokens"], i))
        else:
            order = sorted(idx, key=lambda i: (records[i]["num_tokens"], len(records[i]["completion"]), i))
        texts: set[str] = set()
        for i in order:
            text = normalize(records[i]["completion"])
            if text in texts:
                continue
            texts.add(text)
            keep.add(i)
            if len(texts) == k:
                break
    return [r for i, r in enumerate(records) if i in keep]


def _groups(records: list[Record]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r["id"], []).append(i)
    return groups


def build_filters(
    cfg: Filters,
    fmt: str = "sft",
    index: NgramIndex | None = None,
    decontaminate_completions: bool = False,
    ungraded: bool = True,
) -> list[tuple[str, Filter]]:
    """The filter list for a config. For stepwise/preference output the correctness filters are left
    out (wrong completions are the negatives) and top_k is applied later, on the chosen side.
    `ungraded`: some completions have no gold answer (correctness auto then adds the majority step)."""
    steps: list[tuple[str, Filter]] = [("non-empty", non_empty)]
    if cfg.require_finished:
        steps.append(("finished", finished_only))
    if fmt == "sft":
        if cfg.correctness == "verified":
            steps.append(("verified", verified_only))
        elif cfg.correctness == "auto" and not ungraded:
            steps.append(("verified", verified_only))
        elif cfg.correctness == "auto":
            steps.append(("verified", lambda rs: verified_only(rs, keep_ungraded=True)))
            steps.append(
                (
                    f"majority >= {cfg.min_agreement:g} (no gold)",
                    lambda rs: majority_agreement(rs, cfg.min_agreement, only_ungraded=True),
                )
            )
        elif cfg.correctness == "majority":
            steps.append((f"majority >= {cfg.min_agreement:g}", lambda rs: majority_agreement(rs, cfg.min_agreement)))
    if cfg.min_score is not None:
        steps.append((f"prm score >= {cfg.min_score:g}", lambda rs: score_threshold(rs, cfg.min_score)))
    if cfg.min_tokens > 0 or cfg.max_tokens is not None:
        steps.append(
            (
                f"tokens in [{cfg.min_tokens}, {cfg.max_tokens if cfg.max_tokens is not None else 'inf'}]",
                lambda rs: length_limits(rs, cfg.min_tokens, cfg.max_tokens),
            )
        )
    if index is not None:
        for name in index.names:
            steps.append(
                (
                    f"decontaminate {name}",
                    lambda rs, name=name: decontaminate(rs, index, name, decontaminate_completions),
                )
            )
    if cfg.dedup:
        steps.append(("exact duplicates", exact_dedup))
    if cfg.near_dup_threshold is not None:
        steps.append(
            (
                f"near duplicates (jaccard >= {cfg.near_dup_threshold:g})",
                lambda rs: near_dedup(rs, cfg.near_dup_threshold, cfg.near_dup_ngram, cfg.near_dup_perms),
            )
        )
    if fmt in ("sft", "stepwise") and cfg.top_k is not None:
        steps.append((f"top-{cfg.top_k} per problem", lambda rs: top_k_per_problem(rs, cfg.top_k, cfg.rank_by)))
    return steps


# ---------------------------------------------------------------- hashing


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


class _Hasher:
    """Stable 64-bit hashes of words (cached) and of word n-grams (order-sensitive)."""

    def __init__(self):
        self.cache: dict[str, int] = {}

    def words(self, tokens: list[str]) -> np.ndarray:
        get = self.cache.get
        return np.array([h if (h := get(t)) is not None else self._new(t) for t in tokens], dtype=_U64)

    def _new(self, token: str) -> int:
        h = self.cache[token] = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h

    def ngrams(self, tokens: list[str], n: int, whole: bool = False) -> np.ndarray:
        """Hashes of all n-grams; a text shorter than n gives its whole token sequence when `whole`."""
        w = self.words(tokens)
        if len(w) < n:
            if not whole or len(w) == 0:
                return np.empty(0, dtype=_U64)
            n = len(w)
        m = len(w) - n + 1
        h = w[:m].copy()
        for t in range(1, n):
            h = _mix(h) ^ w[t : t + m]
        return _mix(h ^ _U64(n))  # the length takes part: a 3-gram never equals a 5-gram


_CHUNK = 1 << 16


def minhash(shingles: list[np.ndarray], num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """(len(shingles), num_perm) MinHash signatures; an empty set gets all-max (matches nothing real)."""
    seeds = np.random.default_rng(seed).integers(0, 2**63, size=num_perm, dtype=np.int64).astype(_U64)[:, None]
    out = np.full((len(shingles), num_perm), np.iinfo(_U64).max, dtype=_U64)
    batch: list[int] = []

    def flush():
        if batch:
            arr = np.concatenate([shingles[i] for i in batch])
            starts = np.cumsum([0] + [len(shingles[i]) for i in batch[:-1]])
            out[batch] = np.minimum.reduceat(_mix(arr[None, :] ^ seeds), starts, axis=1).T
            batch.clear()

    size = 0
    for i, sh in enumerate(shingles):
        if len(sh) == 0:
            continue
        if len(sh) > _CHUNK:  # a huge text: alone, in column chunks, so memory stays bounded
            for s in range(0, len(sh), _CHUNK):
                out[i] = np.minimum(out[i], _mix(sh[None, s : s + _CHUNK] ^ seeds).min(axis=1))
            continue
        batch.append(i)
        size += len(sh)
        if size >= _CHUNK:
            flush()
            size = 0
    flush()
    return out


# ---------------------------------------------------------------- decontamination


@dataclass
class NgramIndex:
    """Word n-grams of named eval sets. A text shorter than n words is indexed whole, so short
    eval problems are still caught when they appear verbatim."""

    n: int = 13
    sets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> sorted n-gram hashes
    short: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # name -> length -> hashes
    sizes: dict[str, int] = field(default_factory=dict)
    _hasher: _Hasher = field(default_factory=_Hasher, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.sets)

    def add(self, name: str, texts: Iterable[str]) -> None:
        full, short, count = [], {}, 0
        for text in texts:
            tokens = _WORD.findall(normalize(text))
            if not tokens:
                continue
            count += 1
            if len(tokens) >= self.n:
                full.append(self._hasher.ngrams(tokens, self.n))
            else:
                short.setdefault(len(tokens), []).append(self._hasher.ngrams(tokens, len(tokens)))
        self.sets[name] = np.unique(np.concatenate(full)) if full else np.empty(0, dtype=_U64)
        self.short[name] = {k: np.unique(np.concatenate(v)) for k, v in short.items()}
        self.sizes[name] = count

    def hits(self, text: str, name: str) -> bool:
        """Does `text` share an n-gram with eval set `name` (or contain one of its short problems whole)?"""
        tokens = _WORD.findall(normalize(text))
        if self._any(self._hasher.ngrams(tokens, self.n), self.sets[name]):
            return True
        return any(self._any(self._hasher.ngrams(tokens, k), hashes) for k, hashes in self.short[name].items())

    @staticmethod
    def _any(query: np.ndarray, index: np.ndarray) -> bool:
        if len(query) == 0 or len(index) == 0:
            return False
        pos = np.searchsorted(index, query).clip(max=len(index) - 1)
        return bool((index[pos] == query).any())


def decontaminate(records: list[Record], index: NgramIndex, name: str, completions: bool = False) -> list[Record]:
    """Drop records whose problem (and, with `completions`, completion) overlaps eval set `name`."""
    by_problem: dict[str, bool] = {}
    out = []
    for r in records:
        hit = by_problem.get(r["problem"])
        if hit is None:
            hit = by_problem[r["problem"]] = index.hits(r["problem"], name)
        if not hit and completions:
            hit = index.hits(r["completion"], name)
        if not hit:
            out.append(r)
    return out
