"""Our PRM: a causal-LM backbone with a token-classification head read at each step's end.

A PRM directory holds a transformers checkpoint (or a peft adapter over a base model) and
`synth_prm.json`: {"format": "token-classification", "step_separator": "\\n\\n", "base_model": spec}.
With one label the step score is sigmoid(logit) (our soft-label BCE training); with two labels,
softmax(...)[1] (TRL's stepwise PRMs), so a PRM trained with TRL's format loads too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synth.prm.dtype import resolve_dtype
from synth.prm.format import encode_steps

META = "synth_prm.json"


class TokenClassificationPRM:
    def __init__(self, model, tokenizer, step_separator: str = "\n\n", batch_size: int = 32, max_length: int = 2048,
                 device: str | None = None, dtype: str = "auto"):
        self.model, self.tokenizer = model, tokenizer
        self.step_separator, self.batch_size, self.max_length = step_separator, batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = resolve_dtype(dtype, self.device)
        self.model.to(self.device, self.dtype).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw) -> "TokenClassificationPRM":
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from synth.models import resolve_model

        path = Path(path)
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        sep = meta.get("step_separator", kw.pop("step_separator", "\n"))  # TRL's default separator is "\n"
        tokenizer_dir = path
        if (path / "adapter_config.json").exists():
            from peft import PeftModel

            base = resolve_model(meta.get("base_model") or json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"])
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the head is "newly initialized" here, then replaced by the adapter's
            try:
                model = AutoModelForTokenClassification.from_pretrained(base, num_labels=meta.get("num_labels", 1))
            finally:
                hf_logging.set_verbosity(verbosity)
            model = PeftModel.from_pretrained(model, path).merge_and_unload().float()
            if not (path / "tokenizer_config.json").exists():
                tokenizer_dir = base  # packaged PRMs ship the adapter only
        else:
            model = AutoModelForTokenClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        return cls(model, tokenizer, step_separator=sep, **kw)

    @torch.inference_mode()
    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        encoded = [encode_steps(self.tokenizer, p, s, self.step_separator, self.max_length) for p, s in zip(problems, steps)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        out: list[list[float]] = [[] for _ in encoded]
        for start in range(0, len(order), self.batch_size):
            chunk = [encoded[i] for i in order[start : start + self.batch_size]]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, e in enumerate(chunk):  # right padding: positions stay as in training
                ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[row, : len(e.input_ids)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            probs = torch.sigmoid(logits[..., 0]) if logits.shape[-1] == 1 else torch.softmax(logits, -1)[..., 1]
            for row, i in enumerate(order[start : start + self.batch_size]):
                e = encoded[i]
                scores = probs[row, e.label_positions].tolist()
                # steps cut by max_length inherit the last score we could compute
                scores += [scores[-1] if scores else 0.5] * (len(steps[i]) - len(scores))
                out[i] = scores
        return out
