"""Filtered records -> the dataset formats TRL trainers read.

- sft: conversational prompt-completion (`SFTTrainer`): `prompt` = [system?, user], `completion` = [assistant].
- stepwise: `prompt` (str), `completions` (list of steps), `labels` (list of bools), as TRL's PRM
  datasets and `synth train-prm`. The labels here are outcome labels: every step of a correct trace
  is True and every step of a wrong trace False. Earlier steps of a wrong trace may well be right,
  so this is a coarse signal; `synth label` computes real per-step labels with rollouts.
- preference: conversational `prompt` / `chosen` / `rejected` (`DPOTrainer`): a correct and a wrong
  completion of the same problem.

Extra columns (id, source, answers, scores) are kept for provenance; TRL drops unused columns.
"""

from __future__ import annotations

from typing import Any

from synth.filter.select import Record, _groups, normalize

Row = dict[str, Any]


def chat_prompt(problem: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_sft(records: list[Record], system_prompt: str | None = None) -> list[Row]:
    return [
        {
            "prompt": chat_prompt(r["problem"], system_prompt),
            "completion": _assistant(r["completion"]),
            "id": r["id"],
            "source": r["source"],
            "gold_answer": r["gold_answer"],
            "answer": r["answer"],
            "verified": r["verified"],
            "score": r["score"],
            "num_tokens": r["num_tokens"],
        }
        for r in records
    ]


def to_stepwise(records: list[Record]) -> list[Row]:
    """Records need a `correct` label (True/False); unlabelled ones must be dropped before."""
    rows = []
    for r in records:
        steps = [s for s in (r["steps"] or [r["completion"]]) if s and s.strip()] or [r["completion"]]
        rows.append(
            {
                "prompt": r["problem"],
                "completions": steps,
                "labels": [bool(r["correct"])] * len(steps),
                "id": r["id"],
                "source": r["source"],
                "gold_answer": r["gold_answer"],
                "answer": r["answer"],
                "verified": r["verified"],
                "score": r["score"],
            }
        )
    return rows


def preference_pairs(records: list[Record], per_problem: int | None = None) -> list[tuple[Record, Record]]:
    """(chosen, rejected) pairs of the same problem, each completion used once.

    Chosen: correct, best PRM score first (else shortest). Rejected: wrong, best PRM score first
    (the most convincing mistakes make the most informative pairs), else in generation order.
    Two texts that are equal after normalisation are never paired.
    """
    pairs = []
    for idx in _groups(records).values():
        group = [records[i] for i in idx]
        scored = all(r["score"] is not None for r in group)
        chosen = sorted(
            (r for r in group if r["correct"] is True),
            key=lambda r: (-r["score"], r["num_tokens"]) if scored else (r["num_tokens"], len(r["completion"])),
        )
        rejected = [r for r in group if r["correct"] is False]
        if scored:
            rejected.sort(key=lambda r: -r["score"])
        count = 0
        for c, rej in zip(chosen, rejected):
            if normalize(c["completion"]) == normalize(rej["completion"]):
                continue
            pairs.append((c, rej))
            count += 1
            if per_problem is not None and count == per_problem:
                break
    return pairs


def to_preference(pairs: list[tuple[Record, Record]], system_prompt: str | None = None) -> list[Row]:
    return [
        {
            "prompt": chat_prompt(c["problem"], system_prompt),
            "chosen": _assistant(c["completion"]),
            "rejected": _assistant(r["completion"]),
            "id": c["id"],
            "source": c["source"],
            "gold_answer": c["gold_answer"],
            "chosen_answer": c["answer"],
            "rejected_answer": r["answer"],
            "chosen_score": c["score"],
            "rejected_score": r["score"],
        }
        for c, r in pairs
    ]
