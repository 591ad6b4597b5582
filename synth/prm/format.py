"""How a (problem, steps) pair becomes PRM input: token ids plus the positions that carry step labels.

Training (`train-prm`) and scoring use this one function, so the label positions cannot drift.
Pieces are tokenised separately and concatenated (as TRL's stepwise PRM format does): the problem,
then each step followed by the step separator. A step's label sits on the *last token of its
separator*: the first position where the model has seen the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepwiseInput:
    input_ids: list[int]
    label_positions: list[int]  # one per step, in order


def encode_steps(
    tokenizer,
    problem: str,
    steps: list[str],
    separator: str = "\n\n",
    max_length: int | None = None,
    add_bos: bool = True,
) -> StepwiseInput:
    """Token ids of `problem + sep + step_1 + sep + ... + step_k + sep` and each step's label position.

    Steps that do not fit in `max_length` are dropped (their positions are missing): callers
    compare `len(label_positions)` with `len(steps)`.
    """
    sep_ids = tokenizer.encode(separator, add_special_tokens=False)
    if not sep_ids:
        raise ValueError(f"step separator {separator!r} encodes to no tokens")
    ids = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    ids += tokenizer.encode(problem, add_special_tokens=False) + sep_ids
    positions = []
    for step in steps:
        piece = tokenizer.encode(step, add_special_tokens=False) + sep_ids
        if max_length is not None and len(ids) + len(piece) > max_length:
            break
        ids += piece
        positions.append(len(ids) - 1)
    return StepwiseInput(ids, positions)
