"""Qwen2.5-Math-PRM: a 2-class token classifier read at the `<extra_0>` step separators.

For ``Qwen/Qwen2.5-Math-PRM-7B`` and ``Qwen/Qwen2.5-Math-PRM-72B`` (model card, "Quick Start"):
the input is the tokenizer's chat template over::

    [{"role": "system", "content": "Please reason step by step, and put your final answer within \\\\boxed{}."},
     {"role": "user", "content": problem},
     {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]

(rendered with ``add_generation_prompt=False``), the model (``AutoModel`` with ``trust_remote_code``)
returns 2-class logits per token, and the score of step k is ``softmax(logits)[..., 1]`` at the k-th
`<extra_0>` token. Any literal "<extra_0>" inside the problem or a step is removed so that the
separators are ours. Sequences longer than `max_length` are cut at the right; steps whose separator was
cut inherit the last score computed (0.5 if none).
"""

from __future__ import annotations

from pathlib import Path

import torch

from synth.prm.plus_minus import ScoringInput, batched_logits_at, fill_missing, model_device, pad_id_of

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_TOKEN = "<extra_0>"
HUB_IDS = ("qwen/qwen2.5-math-prm-7b", "qwen/qwen2.5-math-prm-72b")  # lower-cased


class QwenMathPRM:
    """Qwen2.5-Math-PRM scorer (``Qwen/Qwen2.5-Math-PRM-7B``, ``Qwen/Qwen2.5-Math-PRM-72B``).

    `model`: anything whose output has `.logits` of shape (batch, seq, 2), or a tuple starting with
    them (the remote-code ``Qwen2ForProcessRewardModel``, or a ``Qwen2ForTokenClassification(num_labels=2)``).
    `tokenizer`: has `<extra_0>` as one (special) token and a chat template.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        system: str = SYSTEM,
        batch_size: int = 8,
        max_length: int = 4096,
        device: str | None = None,
    ):
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.batch_size, self.max_length = batch_size, max_length
        ids = tokenizer.encode(STEP_TOKEN, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the tokenizer splits {STEP_TOKEN!r} into {len(ids)} tokens: add it as a special token")
        self.step_id = ids[0]
        self.device = model_device(model, device)
        self.pad_id = pad_id_of(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype=None, **kw) -> QwenMathPRM:
        """The real checkpoints need ``trust_remote_code`` (``auto_map`` in their config -> ``AutoModel``);
        a plain token-classification checkpoint loads with ``AutoModelForTokenClassification``."""
        from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, AutoTokenizer

        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        auto = (
            AutoModel if "AutoModel" in (getattr(config, "auto_map", None) or {}) else AutoModelForTokenClassification
        )
        model = auto.from_pretrained(path, dtype=torch_dtype, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        return cls(model, tokenizer, **kw)

    def render(self, problem: str, steps: list[str]) -> str:
        steps = [s.replace(STEP_TOKEN, "") for s in steps]
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": problem.replace(STEP_TOKEN, "")},
            {"role": "assistant", "content": STEP_TOKEN.join(steps) + STEP_TOKEN},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def encode(self, problem: str, steps: list[str]) -> ScoringInput:
        if not steps:
            return ScoringInput([], [])
        # the rendered chat carries its own special tokens (Qwen's tokenizer adds none anyway)
        ids = self.tokenizer(self.render(problem, steps), add_special_tokens=False)["input_ids"][: self.max_length]
        positions = [t for t, tid in enumerate(ids) if tid == self.step_id]
        if len(positions) > len(steps):
            raise ValueError(
                f"{len(positions)} {STEP_TOKEN} tokens for {len(steps)} steps: does the chat template add some?"
            )
        return ScoringInput(list(ids), positions)

    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        inputs = [self.encode(p, s) for p, s in zip(problems, steps)]
        out: list[list[float]] = [[] for _ in inputs]
        for i, logits in batched_logits_at(self.model, inputs, self.batch_size, self.pad_id, self.device):
            if logits.shape[-1] != 2:
                raise ValueError(f"Qwen2.5-Math-PRM models give 2 logits per token, this one gives {logits.shape[-1]}")
            out[i] = fill_missing(torch.softmax(logits, dim=-1)[:, 1].tolist(), len(steps[i]))
        return out


def is_qwen_math_prm_id(spec: str) -> bool:
    return spec.lower() in HUB_IDS
