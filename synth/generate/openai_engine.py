"""A policy behind an OpenAI-compatible completions endpoint: `vllm serve`, SGLang, TGI, or a hosted API.

Search continues raw prefixes, so prompts are rendered here, with the model's own tokenizer and chat
template (as the in-process engines do), and sent to `/v1/completions`. Each sample is its own request
(`n=1`), seeded as the in-process vLLM engine seeds its samples, so every sample's token count comes from
`usage` and a retried request samples the same again. Requests go out concurrently, at most
`max_concurrency` in flight, spread round-robin over the `base_url`s; the client retries 429s, 5xx,
timeouts and dropped connections with backoff (`max_retries`), and a request that still fails ends the
call with one line naming the server (the batches already finished are in the run's journal).

Whether a sample ended at a stop string or at EOS comes from the server's `stop_reason` (vLLM) or
`matched_stop` (SGLang); a server that reports neither is read as: stopped at a stop string when one was
asked for, else at EOS. The API key is read from the environment variable `api_key_env` names: it is
never logged nor written to a config, card or row.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from synth.config import check_fields
from synth.generate.engine import ChatPrompts, Continuation, SamplingParams

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A request the server did not answer, after every retry; the message names the server."""


@dataclass
class OpenAIConfig:
    """The servers of `engine: openai`."""

    base_url: list[str] = field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        metadata={
            "help": (
                "Completions endpoint(s), e.g. http://host:8000/v1; several spread the requests over their servers."
            )
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "Served model name (null: the first one the server lists)."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": ("Name of the environment variable holding the API key (the key itself is never written anywhere).")
        },
    )
    max_concurrency: int = field(
        default=64, metadata={"range": "[1, inf)", "help": "Requests in flight at most, over all servers."}
    )
    timeout_s: float = field(
        default=120.0, metadata={"range": "(0, inf)", "help": "Seconds one request may take before it is retried."}
    )
    max_retries: int = field(
        default=5,
        metadata={
            "range": "[0, inf)",
            "help": "Retries of a failed request (429, 5xx, timeout, dropped connection), with backoff.",
        },
    )

    def __post_init__(self):
        if isinstance(self.base_url, str):
            self.base_url = [self.base_url]
        if not self.base_url:
            raise ValueError("base_url: give at least one server")
        check_fields(self)


class OpenAIPolicy(ChatPrompts):
    """The `Policy` interface over OpenAI-compatible completions servers."""

    def __init__(
        self, tokenizer_path: str, system_prompt: str | None = None, options: OpenAIConfig | None = None, tokenizer=None
    ):
        from transformers import AutoTokenizer

        self.options = options or OpenAIConfig()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(tokenizer_path)
        self.system_prompt = system_prompt
        self.api_key = os.environ.get(self.options.api_key_env) or "EMPTY"  # local servers take any key
        self.model, self.max_model_len = self._served_model(tokenizer_path)

    def _served_model(self, tokenizer_path: str) -> tuple[str, int]:
        """The served model's name and context length (from GET /models: vLLM reports max_model_len)."""
        import openai

        client = openai.OpenAI(
            base_url=self.options.base_url[0],
            api_key=self.api_key,
            timeout=self.options.timeout_s,
            max_retries=self.options.max_retries,
        )
        try:
            models = client.models.list().data
        except openai.APIError as err:
            raise EngineError(
                f"engine openai: the server {self.options.base_url[0]} did not answer GET /models "
                f"({type(err).__name__}: {_reason(err)})"
            ) from None
        finally:
            client.close()
        chosen = (
            next((m for m in models if m.id == self.options.model), None)
            if self.options.model
            else (models or [None])[0]
        )
        if chosen is None:
            raise EngineError(
                f"engine openai: {self.options.base_url[0]} serves {[m.id for m in models]}, not {self.options.model!r}"
            )
        length = (chosen.model_extra or {}).get("max_model_len") or _context_of(tokenizer_path)
        return chosen.id, int(length)

    def new_search(self) -> None:
        """The server's prefix cache only saves compute: nothing to forget."""

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        if not prompts:
            return []
        return asyncio.run(self._generate(prompts, params))

    async def _generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        import openai

        from synth.generate.vllm import request_seed

        o = self.options
        clients = [
            openai.AsyncOpenAI(base_url=url, api_key=self.api_key, timeout=o.timeout_s, max_retries=o.max_retries)
            for url in o.base_url
        ]
        gate = asyncio.Semaphore(o.max_concurrency)
        prompt_tokens = [self.count_tokens(p) for p in prompts]

        async def one(k: int, i: int, j: int) -> Continuation:
            async with gate:
                client = clients[k % len(clients)]
                try:
                    resp = await client.completions.create(
                        model=self.model,
                        prompt=prompts[i],
                        n=1,
                        max_tokens=params.max_tokens,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        stop=list(params.stop) if params.stop else None,
                        seed=request_seed(params.seed, i, params.n) + j,
                        extra_body={"include_stop_str_in_output": params.include_stop, "skip_special_tokens": True},
                    )
                except openai.BadRequestError as err:
                    if "stop" in str(err) and ("too_long" in str(err) or "at most" in str(err)):
                        raise EngineError(
                            f"engine openai: {client.base_url} takes fewer stop strings than the "
                            f"{len(params.stop or [])} these steps end at: start vLLM with "
                            "VLLM_MAX_STOP_STRINGS=8 (OpenAI's own API allows 4)"
                        ) from None
                    raise EngineError(f"engine openai: {client.base_url} refused a request ({_reason(err)})") from None
                except openai.APIError as err:
                    raise EngineError(
                        f"engine openai: {client.base_url} failed after {o.max_retries} retries "
                        f"({type(err).__name__}: {_reason(err)}); the finished batches are saved: rerun "
                        "with --resume true"
                    ) from None
            return _continuation(resp, params, prompt_tokens[i])

        try:
            jobs = [
                one(k, i, j) for k, (i, j) in enumerate((i, j) for i in range(len(prompts)) for j in range(params.n))
            ]
            flat = await asyncio.gather(*jobs)
        finally:
            for c in clients:
                await c.close()
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]


def _continuation(resp: Any, params: SamplingParams, prompt_tokens: int) -> Continuation:
    choice = resp.choices[0]
    extra = choice.model_extra or {}
    matched = extra.get("stop_reason", extra.get("matched_stop", "unknown"))
    if choice.finish_reason == "length":
        reason = "length"
    elif matched == "unknown":  # a server that does not say which stop it hit
        reason = "stop" if params.stop else "eos"
    else:
        reason = "stop" if isinstance(matched, str) else "eos"  # a stop string, or EOS / a stop token id
    usage = resp.usage
    tokens = usage.completion_tokens if usage is not None else 0
    cached = 0
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    if details is not None:
        cached = getattr(details, "cached_tokens", 0) or 0
    return Continuation(choice.text, tokens, reason, prompt_tokens, cached)  # servers count the EOS token, as ours do


def _reason(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def _context_of(model_path: str) -> int:
    try:
        from transformers import AutoConfig

        return int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 0) or 4096)
    except (OSError, ValueError):
        return 4096
