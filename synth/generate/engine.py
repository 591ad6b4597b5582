"""The policy engine protocol: continue a batch of prompts, n samples each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

StopReason = Literal["eos", "stop", "length"]

# None keeps the chat template's own default system prompt: SmolLM2-135M answers arithmetic best
# that way (longer instructions about format lower its accuracy; measured on reasoning-gym).
DEFAULT_SYSTEM_PROMPT: str | None = None


def chat_messages(problem: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat messages of a problem: what the policy sees, and the `prompt` of SFT and preference rows."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


@dataclass
class Continuation:
    """What one sample produced after its prompt."""

    text: str  # generated text, without the stop string (with it under include_stop)
    num_tokens: int  # tokens generated (the stop string's tokens included)
    stop_reason: StopReason  # eos: the model ended; stop: a stop string; length: max_tokens
    prompt_tokens: int = 0  # tokens of the prompt this sample was continued from
    cached_tokens: int = 0  # of those, tokens whose KV the engine reused instead of prefilling them


@dataclass
class SamplingParams:
    n: int = 1
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 1.0
    stop: list[str] | None = None  # e.g. ["\n\n"] to generate one step at a time
    include_stop: bool = False  # keep the matched stop string at the end of the text (a sentence's ". ")
    seed: int = 0
    # A hint that the next call will extend these continuations (beam search, DVTS): an engine may
    # keep their KV cache until then. vLLM ignores it (its prefix caching does the same).
    keep_cache: bool = False
    # Once no prompt waits and at most this many rows still decode (and at least as many have ended), they
    # stop as if at max_tokens (0: never).
    tail_rows: int = 0


class Policy(Protocol):
    """A policy LLM behind one interface (transformers or vLLM)."""

    max_model_len: int  # longest prompt + completion, in tokens

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as a prompt (no special tokens added)."""
        ...

    def chat_prompt(self, problem: str) -> str:
        """The problem wrapped in the chat template (system prompt included), ready to continue."""
        ...

    def new_search(self) -> None:
        """Forget what earlier searches left cached, so a batch samples the same wherever it runs."""
        ...

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        """For each prompt, `params.n` continuations."""
        ...


class ChatPrompts:
    """`count_tokens` and `chat_prompt` of an engine that has `self.tokenizer` and `self.system_prompt`."""

    tokenizer: Any
    system_prompt: str | None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as a prompt (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def chat_prompt(self, problem: str) -> str:
        return render_chat_prompt(self.tokenizer, self.system_prompt, problem)


def render_chat_prompt(tokenizer, system_prompt: str | None, problem: str) -> str:
    """The problem in the tokenizer's chat template (plain text when it has none), ready to continue.
    Every engine builds prompts here, so they see the same text."""
    if tokenizer.chat_template is None:
        return (system_prompt + "\n\n" if system_prompt else "") + problem + "\n\n"
    return tokenizer.apply_chat_template(
        chat_messages(problem, system_prompt), tokenize=False, add_generation_prompt=True
    )
