"""Where a reasoning step ends: at a delimiter ("\\n\\n", the blog's choice) or at the end of a sentence.

A step has two forms. Its *text* is what the PRM scores and a trace stores (stripped). Its *piece* is
the exact text it adds to the prompt that the policy continues, so a path's prefix is the prompt plus
its pieces. With a delimiter, a piece is the step plus the delimiter, as in search-and-learn. With
sentences, a piece ends right after the sentence's punctuation and the next piece starts with the
whitespace the model wrote: a prefix never ends in a space, which the tokenizer would have merged into
the next word (" The" is one token), so the policy continues the way it wrote the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

StepCut = Literal["delimiter", "sentence"]
STEP_CUTS = ("delimiter", "sentence")

# A sentence ends at . ! or ? followed by a space or a newline (so "3.5" does not cut); the regex cuts
# whole completions where the stop strings would have stopped generation.
SENTENCE_STOPS = [". ", ".\n", "? ", "?\n", "! ", "!\n"]
_SENTENCE_END = re.compile(r"(?<=[.!?])(?=[ \n])")


@dataclass(frozen=True)
class StepRule:
    cut: StepCut = "delimiter"
    delimiter: str = "\n\n"

    def __post_init__(self):
        if self.cut not in STEP_CUTS:
            raise ValueError(f"step cut must be one of {', '.join(STEP_CUTS)}, not {self.cut!r}")
        if self.cut == "delimiter" and not self.delimiter:
            raise ValueError("the step delimiter must not be empty")

    @property
    def stops(self) -> list[str]:
        """Stop strings that end one generated step."""
        return list(SENTENCE_STOPS) if self.cut == "sentence" else [self.delimiter]

    @property
    def include_stop(self) -> bool:
        """Whether the engine keeps the stop string (a sentence keeps its full stop)."""
        return self.cut == "sentence"

    def generated(self, text: str) -> tuple[str, str]:
        """(lead, step) of a step's text generated with `stops` and `include_stop`."""
        if self.cut == "delimiter":
            return "", text.strip()
        return _lead_and_step(text)

    def cut_text(self, text: str) -> list[tuple[str, str]]:
        """A whole completion as the (lead, step) pairs step-by-step generation would have produced."""
        if self.cut == "delimiter":
            return [("", s.strip()) for s in text.split(self.delimiter) if s.strip()]
        # Zero-width cuts: every part but the first starts with the whitespace after a sentence end.
        return [pair for pair in map(_lead_and_step, _SENTENCE_END.split(text)) if pair[1]]

    def steps(self, text: str) -> list[str]:
        """Non-empty steps of a completion, stripped."""
        return [step for _, step in self.cut_text(text)]

    def piece(self, lead: str, step: str) -> str:
        """The exact text a step adds to the policy's prefix."""
        if not step:
            return ""
        return lead + step if self.cut == "sentence" else step + self.delimiter

    def prefix(self, pairs: list[tuple[str, str]]) -> str:
        return "".join(self.piece(lead, step) for lead, step in pairs)

    def completion(self, pairs: list[tuple[str, str]]) -> str:
        """The completion a path spells (what a trace stores)."""
        return self.prefix(pairs).strip()


def _lead_and_step(text: str) -> tuple[str, str]:
    text = text.rstrip()
    step = text.lstrip()
    return text[: len(text) - len(step)], step
