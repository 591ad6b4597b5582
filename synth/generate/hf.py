"""transformers backend of the policy engine: batched sampling across problems and samples."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from synth.generate.engine import Continuation, SamplingParams

# None keeps the chat template's own default system prompt: SmolLM2-135M answers arithmetic best
# that way (longer instructions about format lower its accuracy; measured on reasoning-gym).
DEFAULT_SYSTEM_PROMPT: str | None = None


class TransformersPolicy:
    """A causal LM served with ``model.generate``.

    Prompts are left-padded into batches of at most ``batch_size`` sequences (the n samples of a
    prompt count as n sequences); sequences are sorted by length so a batch wastes little padding.
    """

    def __init__(
        self,
        model_path: str,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        batch_size: int = 64,
        dtype: str = "float32",
        device: str | None = None,
        model=None,
        tokenizer=None,
    ):
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model or AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(self.model, self.tokenizer)

    def chat_prompt(self, problem: str) -> str:
        messages = [{"role": "user", "content": problem}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if self.tokenizer.chat_template is None:
            return (self.system_prompt + "\n\n" if self.system_prompt else "") + problem + "\n\n"
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        torch.manual_seed(params.seed)
        jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for _, p in jobs]
        order = sorted(range(len(jobs)), key=lambda j: lengths[j])
        results: list[list[Continuation]] = [[] for _ in prompts]
        slots: dict[int, Continuation] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            outs = self._generate_batch([jobs[j][1] for j in chunk], params)
            slots.update(zip(chunk, outs))
        for j in range(len(jobs)):  # back to prompt order, samples in job order
            results[jobs[j][0]].append(slots[j])
        return results

    def _generate_batch(self, texts: list[str], params: SamplingParams) -> list[Continuation]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = params.temperature > 0
        out = self.model.generate(
            **enc,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=None,
            max_new_tokens=params.max_tokens,
            stopping_criteria=StoppingCriteriaList([StopOnStrings(self.tokenizer, params.stop, enc.input_ids.shape[1])])
            if params.stop
            else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
        )
        new = out[:, enc.input_ids.shape[1] :].tolist()
        return [self._continuation(row, params, int(n)) for row, n in zip(new, enc.attention_mask.sum(1))]

    def _continuation(self, row: list[int], params: SamplingParams, prompt_tokens: int) -> Continuation:
        end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
        tokens = row if end is None else row[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in params.stop or []:
            cut = text.find(stop)
            if cut >= 0:
                return Continuation(text[:cut], len(tokens), "stop", prompt_tokens)
        if end is not None:
            return Continuation(text, len(tokens) + 1, "eos", prompt_tokens)
        return Continuation(text, len(tokens), "length", prompt_tokens)


class StopOnStrings(StoppingCriteria):
    """Stop a row once a stop string appears in its *generated* text.

    transformers' own ``stop_strings`` also matches across the prompt boundary, so a prefix that
    ends with the step delimiter (every beam-search prefix does) would stop at once.
    """

    def __init__(self, tokenizer, stops: list[str], prompt_len: int, window: int = 8):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        self.window = window + max(len(s) for s in stops)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.window) :]
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config else None
    ids = ids if isinstance(ids, list) else [ids]
    ids = {i for i in ids if i is not None}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    # A pad token equal to EOS is how finished rows are filled in a batch.
    if tokenizer.pad_token_id is not None:
        ids.add(tokenizer.pad_token_id)
    return ids
