"""'+/-' token PRMs: causal LMs trained to say '+' (step is good) or '-' (step is bad) at each step.

The step score is P('+') from a softmax over the two candidate tokens only, read from the logits of
the position that predicts the '+'/'-' token. Two input formats (`style`):

- ``"math-shepherd"``: ``peiyi9979/math-shepherd-mistral-7b-prm``. One plain string (no chat
  template, tokenizer's own special tokens, e.g. BOS, added)::

      f"{problem} {step_1} ки\\n{step_2} ки\\n...\\n{step_n} ки"

  and the score of step k is read at the last token of its k-th step tag 'ки'. (Model card:
  ``candidate_tokens = tokenizer.encode("+ -")[1:]``, ``step_tag_id = tokenizer.encode("ки")[-1]``,
  ``input_for_prm = f"{question} {output}"``, ``logits[..., candidate_tokens].softmax(-1)[..., 0]``
  at ``input_id == step_tag_id``.) The model was trained on steps written as "Step k: ...".
- ``"rlhflow"``: ``RLHFlow/Llama3.1-8B-PRM-Deepseek-Data`` and ``RLHFlow/Llama3.1-8B-PRM-Mistral-Data``.
  A chat rendered with the tokenizer's chat template: user turn 1 = ``f"{problem} {step_1}"``, user
  turn k = ``step_k``, every assistant turn = ``"+"``. The score of step k is read at the position
  just before assistant turn k's '+' token (RLHFlow's ``math-rm/prm_evaluate.py`` reads ``logits[:, -3]``
  of the conversation cut after turn k; the causal mask makes one forward over the whole conversation
  give the same numbers).

Steps are stripped of surrounding whitespace in both styles (RLHFlow's evaluation strips them; the
Llama 3.1 template trims message contents anyway). Sequences longer than `max_length` are cut at the
right; steps whose scoring position was cut inherit the last score computed (0.5 if none).

`batched_logits_at` is shared with the Qwen backend: sort by length, right-pad, one forward per batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)

Style = Literal["math-shepherd", "rlhflow"]
STYLES: tuple[str, ...] = ("math-shepherd", "rlhflow")

# Hub ids whose format we know (lower-cased: Hub ids are case-insensitive).
HUB_STYLES: dict[str, str] = {
    "peiyi9979/math-shepherd-mistral-7b-prm": "math-shepherd",
    "rlhflow/llama3.1-8b-prm-deepseek-data": "rlhflow",
    "rlhflow/llama3.1-8b-prm-mistral-data": "rlhflow",
}

_SENTINEL = "\ue000"  # private-use character marking the assistant turns while rendering the chat


@dataclass
class ScoringInput:
    input_ids: list[int]
    positions: list[int]  # one per step (fewer when the sequence was cut), in order


def logits_of(output) -> torch.Tensor:
    """`.logits` of a transformers output, or the first element of a tuple output."""
    logits = getattr(output, "logits", None)
    return logits if logits is not None else output[0]


def model_device(model, device: str | None) -> torch.device:
    """Move `model` to `device` (default: cuda if available) unless it was dispatched with a device map."""
    if getattr(model, "hf_device_map", None) is None:
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return next(model.parameters()).device


def pad_id_of(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0


def tokens_at_chars(offsets: list[tuple[int, int]], chars: list[int], text_len: int, last: bool) -> list[int | None]:
    """For each character index, the token whose span holds it (the last or first such token when
    byte-level pieces of one character share a span); special tokens with empty spans hold none."""
    owner: list[int | None] = [None] * text_len
    for t, (s, e) in enumerate(offsets):
        for c in range(s, min(e, text_len)):
            if last or owner[c] is None:
                owner[c] = t
    return [owner[c] if 0 <= c < text_len else None for c in chars]


@torch.inference_mode()
def batched_logits_at(
    model, inputs: list[ScoringInput], batch_size: int, pad_id: int, device, **forward_kw
) -> Iterator[tuple[int, torch.Tensor]]:
    """(index into `inputs`, logits at its positions: (len(positions), C)), batched by length.

    Inputs without positions are skipped; the others are sorted by length, right-padded (positions stay as in the unpadded sequence) with an
    attention mask, and each batch gets one forward pass.
    """
    order = sorted((i for i in range(len(inputs)) if inputs[i].positions), key=lambda i: len(inputs[i].input_ids))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(inputs[i].input_ids) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(inputs[i].input_ids)
            ids[row, :n] = torch.tensor(inputs[i].input_ids, dtype=torch.long)
            mask[row, :n] = 1
        logits = logits_of(model(input_ids=ids.to(device), attention_mask=mask.to(device), **forward_kw))
        for row, i in enumerate(idx):
            yield i, logits[row, inputs[i].positions].float()


def fill_missing(scores: list[float], n_steps: int) -> list[float]:
    """Steps cut by max_length inherit the last score computed (0.5 if none)."""
    return scores + [scores[-1] if scores else 0.5] * (n_steps - len(scores))


class PlusMinusPRM:
    """'+/-' token PRM (see the module docstring for the two formats).

    style="math-shepherd": ``peiyi9979/math-shepherd-mistral-7b-prm``.
    style="rlhflow": ``RLHFlow/Llama3.1-8B-PRM-Deepseek-Data``, ``RLHFlow/Llama3.1-8B-PRM-Mistral-Data``.

    `model` is a causal LM (anything whose output has `.logits` of shape (batch, seq, vocab), or a
    tuple starting with them). Token ids: ``tokenizer.encode(token, add_special_tokens=False)[-1]``
    for '+' and '-' (as in both reference implementations: [648, 387] for Mistral's tokenizer).
    """

    def __init__(
        self,
        model,
        tokenizer,
        style: Style = "math-shepherd",
        *,
        good_token: str = "+",
        bad_token: str = "-",
        step_tag: str = "ки",
        batch_size: int = 8,
        max_length: int = 4096,
        device: str | None = None,
    ):
        if style not in STYLES:
            raise ValueError(f"unknown plus-minus style {style!r}: use one of {', '.join(STYLES)}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("PlusMinusPRM needs a fast tokenizer (character offsets locate the scoring positions)")
        self.model, self.tokenizer, self.style = model, tokenizer, style
        self.good_token, self.bad_token, self.step_tag = good_token, bad_token, step_tag
        self.batch_size, self.max_length = batch_size, max_length
        self.good_id = tokenizer.encode(good_token, add_special_tokens=False)[-1]
        self.bad_id = tokenizer.encode(bad_token, add_special_tokens=False)[-1]
        if self.good_id == self.bad_id:
            raise ValueError(f"{good_token!r} and {bad_token!r} end in the same token id {self.good_id}")
        self.tag_id = tokenizer.encode(step_tag, add_special_tokens=False)[-1]  # the model card's step_tag_id
        self.device = model_device(model, device)
        self.pad_id = pad_id_of(tokenizer)
        self._warned = False

    @classmethod
    def from_pretrained(cls, path: str | Path, style: Style | None = None, torch_dtype=None, **kw) -> PlusMinusPRM:
        """A local dir or Hub id; `style` from the argument, `synth_prm.json`, or the known Hub ids."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from synth.prm.token_cls import META

        meta_file = Path(path) / META
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        style = style or meta.get("style") or HUB_STYLES.get(str(path).lower())
        if style is None:
            raise ValueError(
                f"{path}: plus-minus PRM style unknown: pass style= ({', '.join(STYLES)}) or set it in {META}"
            )
        for key in ("good_token", "bad_token", "step_tag"):
            if key in meta:
                kw.setdefault(key, meta[key])
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, style=style, **kw)

    # -- formatting --------------------------------------------------------------------------
    def render(self, problem: str, steps: list[str]) -> tuple[str, list[int]]:
        """The input text and, per step, the character index the score is read from.

        math-shepherd: the last character of step k's tag (the score is read *at* that token).
        rlhflow: the first character of assistant turn k's '+' (the score is read one token before).
        """
        steps = [s.replace(_SENTINEL, "").strip() for s in steps]
        problem = problem.replace(_SENTINEL, "")
        if self.style == "math-shepherd":
            text, chars = f"{problem} ", []
            for k, step in enumerate(steps):
                text += ("\n" if k else "") + f"{step} {self.step_tag}"
                chars.append(len(text) - 1)
            return text, chars
        conversation = []
        for k, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
            conversation.append({"role": "assistant", "content": _SENTINEL})
        rendered = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        pieces = rendered.split(_SENTINEL)
        if len(pieces) != len(steps) + 1:
            raise ValueError("the chat template did not render each assistant turn exactly once")
        text, chars = pieces[0], []
        for piece in pieces[1:]:
            chars.append(len(text))
            text += self.good_token + piece
        return text, chars

    def encode(self, problem: str, steps: list[str]) -> ScoringInput:
        if not steps:
            return ScoringInput([], [])
        text, chars = self.render(problem, steps)
        # plain text: the tokenizer's own special tokens (BOS); a rendered chat already has them
        enc = self.tokenizer(text, add_special_tokens=self.style == "math-shepherd", return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        positions = []
        for t in tokens_at_chars(offsets, chars, len(text), last=self.style == "math-shepherd"):
            if t is None:
                raise ValueError("a scoring character of the PRM input is held by no token")
            expected = self.good_id if self.style == "rlhflow" else self.tag_id
            if ids[t] != expected and not self._warned:
                log.warning(
                    "%s: the %s tokenised as %r, not as in training: scores may be off",
                    self.style,
                    "assistant '+'" if self.style == "rlhflow" else f"step tag {self.step_tag!r}",
                    self.tokenizer.convert_ids_to_tokens(ids[t]),
                )
                self._warned = True
            if self.style == "rlhflow":
                t -= 1
            if t >= self.max_length:
                break
            positions.append(t)
        return ScoringInput(ids[: self.max_length], positions)

    # -- scoring -----------------------------------------------------------------------------
    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        inputs = [self.encode(p, s) for p, s in zip(problems, steps)]
        out: list[list[float]] = [[] for _ in inputs]
        cand = [self.good_id, self.bad_id]
        for i, logits in batched_logits_at(
            self.model, inputs, self.batch_size, self.pad_id, self.device, use_cache=False
        ):
            probs = torch.softmax(logits[:, cand], dim=-1)[:, 0]  # P('+') = sigmoid(l+ - l-)
            out[i] = fill_missing(probs.tolist(), len(steps[i]))
        return out
