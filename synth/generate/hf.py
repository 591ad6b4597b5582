"""transformers backend of the policy engine: batched sampling across problems and samples.

The decode loop is ours rather than ``model.generate``: each prompt is prefilled once and its KV
held once for its n samples (`shared_prefix`: a decode step reads it once, not once per sample);
finished rows stop counting at once (``model.generate`` keeps computing them until the longest row
ends): waiting prompts join the batch in their place (`join_rows`), so it stays full, and with none
waiting they are compacted away once they outnumber the live rows (a compaction copies every live
row's KV, about a decode step's time; a finished row costs a step little); the KV cache reserves room for the whole continuation up front
(`reserved_cache`: no copy of the cache per token). Stop strings are matched on generated text only.
With ``SamplingParams.keep_cache`` the KV of every continuation is kept until the next such call,
which prefills only what its prompts add to a kept sequence (beam search and DVTS extend last
iteration's continuations; without this each iteration prefills every path again), and encodes a prompt
extending a kept text as that text's own ids plus its new text's (`token_memo`).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StoppingCriteria
from transformers.cache_utils import DynamicLayer

from synth.generate.engine import DEFAULT_SYSTEM_PROMPT, ChatPrompts, Continuation, SamplingParams
from synth.generate.gqa_sdpa import use_gqa_sdpa
from synth.generate.kv_stash import Entry, KVStash, caller, fill_kept
from synth.generate.packed_linear import pack_linears
from synth.generate.reserved_cache import ReservedLayer, join_rows, reserved_cache
from synth.generate.shared_prefix import SharedPrefix, use_shared_prefix
from synth.models import default_device, resolve_dtype


class TransformersPolicy(ChatPrompts):
    """A causal LM served with a batched KV-cache decode loop.

    At most ``batch_size`` sequences decode together (the n samples of a prompt count as n).
    Prompts are sorted by length so a batch wastes little padding.
    """

    def __init__(
        self,
        model_path: str,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        batch_size: int = 64,
        dtype: str = "auto",
        device: str | None = None,
        model=None,
        tokenizer=None,
    ):
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or default_device()
        loaded = model is None
        self.model = model or AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype(dtype, self.device))
        self.model.to(self.device).eval()
        if loaded:  # ours to change: a model passed in is left as it is
            pack_linears(self.model)
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        # KV reuse needs plain full-attention layers (sliding-window caches cannot be spliced)
        self.reuses_kv = all(type(x) is DynamicLayer for x in DynamicCache(config=self.model.config).layers)
        # rows join a running batch only where every layer is a ReservedLayer (`join_rows`)
        self.joins_rows = all(isinstance(x, ReservedLayer) for x in reserved_cache(self.model.config, 0).layers)
        self.keeps_finished_rows = True  # finished rows leave the batch lazily (`_Decoder.step`); off: at once
        # a prompt's KV held once for all its samples (`shared_prefix`); off: copied to every row
        self.shares_prefix = self.joins_rows and self.reuses_kv and use_shared_prefix(self.model)
        if not self.shares_prefix:
            use_gqa_sdpa(self.model)  # shared-prefix attention does this for its prefills
        # one stash per search thread (`kv_stash.caller`): searches side by side (`overlap`) each extend their own
        self._stashes: dict[int, KVStash] = {}
        self._stop_starts: dict[tuple[str, ...], list[bool]] = {}

    @property
    def stash(self) -> KVStash | None:
        """The calling search thread's KV stash (None when the model's caches cannot be reused)."""
        if not self.reuses_kv:
            return None
        return self._stashes.setdefault(caller(), KVStash())

    @stash.setter
    def stash(self, value: KVStash) -> None:
        self._stashes[caller()] = value

    @property
    def max_model_len(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def new_search(self) -> None:
        if self.reuses_kv:
            alive = {t.ident for t in threading.enumerate()}
            self._stashes = {k: v for k, v in self._stashes.items() if k in alive}  # threads gone: free their KV
            self.stash = KVStash()

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Continuation]]:
        stash = self.stash
        new_stash = KVStash() if params.keep_cache and stash is not None else None
        ids = [self._encode(p, stash) for p in prompts]
        if new_stash is not None:
            for p, x in zip(prompts, ids):
                new_stash.texts.add(p, x)
        results = _Decoder(self, params, ids, stash, new_stash, prompts).run()
        if new_stash is not None:
            self.stash = new_stash
        return results

    def _encode(self, prompt: str, stash: KVStash | None) -> list[int]:
        """A prompt's ids: a prompt extending a kept text keeps that text's ids (the tokens the policy wrote)
        and tokenizes only what it adds (`token_memo`)."""
        return self.encode(prompt) if stash is None else stash.texts.encode(prompt, self.encode)

    def _prefill(self, prompt_ids: list[list[int]], reused: list[tuple[Entry | None, int]], max_tokens: int = 0):
        """Run each prompt's new tokens on the KV kept for its first `reused` tokens (left padded:
        [pad | reused KV | pad | new tokens]) into a cache with room for `max_tokens` more.
        Returns last-token logits, cache, 2D mask, positions."""
        new = [p[n:] for p, (_, n) in zip(prompt_ids, reused)]
        width = max(len(x) for x in new)
        cache = reserved_cache(self.model.config, max(n for _, n in reused) + width + max_tokens)
        kept = fill_kept(cache, reused)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in new], device=self.device)
        new_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in new], device=self.device)
        kept_mask = torch.tensor(
            [[0] * (kept - n) + [1] * n for _, n in reused], device=self.device, dtype=new_mask.dtype
        )
        mask = torch.cat([kept_mask.view(len(new), kept), new_mask], dim=1)
        pos = torch.tensor([[n] for _, n in reused], device=self.device) + (new_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
        ).logits[:, -1]
        if cache.get_seq_length() != mask.shape[1]:
            # a transformers that ignores `cache=` would decode without the prompt: garbage, silently
            import transformers

            raise RuntimeError(
                f"transformers {transformers.__version__} did not fill the KV cache passed as `cache=` "
                f"({cache.get_seq_length()} of {mask.shape[1]} tokens): synth needs transformers>=5.20"
            )
        return logits, cache, mask, pos

    def stop_starts(self, stops: list[str]) -> list[bool] | None:
        """Per token id: whether its text may hold the first character of one of `stops` (None: every token
        may). A stop string found in a row's last tokens (the decoded window) starts in one of them, so a
        window without such a token holds none and is not decoded (sentence stops: about 9 rows in 10 are not).
        Tokens with no text of their own (special, partial UTF-8) count as may; a stop string starting with a
        space gets None: some tokenizers drop a token's leading space when it is decoded alone."""
        firsts = tuple(sorted({s[0] for s in stops}))
        if " " in firsts:
            return None
        if firsts not in self._stop_starts:
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=True)
            self._stop_starts[firsts] = [not p or "\ufffd" in p or any(c in p for c in firsts) for p in pieces]
        return self._stop_starts[firsts]

    @staticmethod
    def _sample(logits: torch.Tensor, params: SamplingParams, gen) -> torch.Tensor:
        """One token per row from softmax(logits / T), nucleus-cut at top_p, by inverse CDF: one uniform
        per row (torch.multinomial draws an exponential per vocabulary entry; bench/roofline.py times both)."""
        if params.temperature <= 0:
            return logits.argmax(-1)
        probs = (logits.float() / params.temperature).softmax(-1)
        order = None
        if params.top_p < 1.0:
            probs, order = probs.sort(-1, descending=True)
            probs = probs.masked_fill(probs.cumsum(-1) - probs > params.top_p, 0.0)
        cdf = probs.cumsum(-1)
        total = cdf[:, -1:]
        u = torch.rand(total.shape, generator=gen, device=cdf.device, dtype=cdf.dtype) * total
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # below the last token with mass
        pick = torch.searchsorted(cdf, u, right=True)
        return (pick if order is None else order.gather(-1, pick))[:, 0]

    def _continuation(
        self, tokens: list[int], reason: str, params: SamplingParams, prompt_tokens: int, cached: int
    ) -> Continuation:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if reason == "stop":
            # The stop string that ends first (as vLLM picks it); the text after it is dropped.
            hits = [(text.find(s) + len(s), s) for s in params.stop or [] if s in text]
            if hits:
                end, stop = min(hits)
                return Continuation(
                    text[: end if params.include_stop else end - len(stop)], len(tokens), "stop", prompt_tokens, cached
                )
        n = len(tokens) + (1 if reason == "eos" else 0)
        return Continuation(text, n, "eos" if reason == "eos" else "length", prompt_tokens, cached)


class _Decoder:
    """One call's decode loop: at most `batch_size` rows live. Chunks (a prompt's samples) join the running
    batch as rows finish (their prompts prefilled once, their caches joined to it: `join_rows`), so the batch
    stays full while rows end at different lengths; a join waits until a quarter of the rows are free."""

    def __init__(
        self,
        policy: TransformersPolicy,
        params: SamplingParams,
        prompt_ids: list[list[int]],
        kept: KVStash | None,
        stash: KVStash | None,
        prompts: list[str],
    ):
        self.policy, self.params, self.prompt_ids, self.stash = policy, params, prompt_ids, stash
        self.prompts = prompts
        self.reused = [kept.match(x) if kept is not None else (None, 0) for x in prompt_ids]
        self.gen = torch.Generator(device=policy.device).manual_seed(params.seed)
        n, size = params.n, policy.batch_size
        chunks = [(i, min(size, n - s)) for i in range(len(prompt_ids)) for s in range(0, n, size)]
        chunks.sort(key=lambda c: len(prompt_ids[c[0]]) - self.reused[c[0]][1])  # similar lengths: little padding
        self.pending: deque[tuple[int, int]] = deque(chunks)  # (prompt, samples)
        self.owner: list[int] = []  # row -> prompt
        self.rows: list[list[int]] = [[] for _ in prompt_ids]  # prompt -> its rows, in sample order
        self.tokens: list[list[int]] = []
        self.reasons: list[str | None] = []
        self.batch: _Batch | None = None
        self.window = max((len(s) for s in params.stop or []), default=0) + 8
        # a row's window is decoded only while it holds a token that may start a stop string (`stop_starts`)
        self.starts = policy.stop_starts(params.stop) if params.stop else None
        self.since_start: list[int] = []  # row -> tokens generated since the last that may start a stop string
        # with one row per prompt a shared prefix saves no reads, and costs a second attention call per layer
        shared = params.n > 1 or len({tuple(x) for x in prompt_ids}) < len(prompt_ids)
        self.shares_prefix = policy.shares_prefix and shared

    def run(self) -> list[list[Continuation]]:
        """Decode every sample; each prompt's continuations, in sample order."""
        while self.pending or self.batch is not None:
            self.step()
        return [
            [
                self.policy._continuation(
                    self.tokens[row], self.reasons[row] or "length", self.params, len(ids), self.reused[i][1]
                )
                for row in self.rows[i]
            ]
            for i, ids in enumerate(self.prompt_ids)
        ]

    def step(self) -> None:
        """Join what fits, sample a token for every row, feed the rows still going."""
        policy, params = self.policy, self.params
        free = policy.batch_size - (len(self.batch.live) if self.batch else 0)  # a join compacts finished rows away
        joins = self.batch is None or (policy.joins_rows and free >= max(policy.batch_size // 4, 1))
        if self.pending and self.pending[0][1] <= free and joins:
            take = []
            while self.pending and sum(c for _, c in take) + self.pending[0][1] <= free:
                take.append(self.pending.popleft())
            new = self._admit(take)
            self.batch = new if self.batch is None else self.batch.joined(new, params.max_tokens)
        batch = self.batch
        nxt = policy._sample(batch.logits, params, self.gen)  # one per live row
        keep, done = [], []  # positions in the batch
        for j, t in zip(batch.live, nxt.tolist()):
            row = batch.rows[j]
            toks = self.tokens[row]
            if t in policy.eos_ids:
                self.reasons[row] = "eos"
            else:
                toks.append(t)
                text = ""
                if params.stop:
                    if self.starts is not None:
                        may_start = t >= len(self.starts) or self.starts[t]
                        self.since_start[row] = 0 if may_start else self.since_start[row] + 1
                    if self.starts is None or self.since_start[row] < self.window:
                        text = policy.tokenizer.decode(toks[-self.window :], skip_special_tokens=True)
                if any(s in text for s in params.stop or []):
                    self.reasons[row] = "stop"
                elif len(toks) >= params.max_tokens:
                    self.reasons[row] = "length"
                else:
                    keep.append(j)
                    continue
            done.append(j)
        if (
            params.tail_rows
            and not self.pending
            and 0 < len(keep) <= params.tail_rows
            and len(keep) <= sum(r is not None for r in self.reasons)  # rows of this call that ended by themselves
        ):
            # The call's last few rows, once at least as many have ended: cut here, as if at max_tokens.
            for j in keep:
                self.reasons[batch.rows[j]] = "length"
            done, keep = done + keep, []
        if self.stash is not None:
            for j in done:
                self._stash(batch.rows[j], j)
        if not keep:
            self.batch = None
            return
        dev = policy.device
        if done:
            going = set(keep)
            nxt = nxt[torch.tensor([k for k, j in enumerate(batch.live) if j in going], device=dev)]
            batch.live = keep
            # Finished rows stay in the batch, fed a pad, until they outnumber the live ones or rows join:
            # compacting copies every live row's KV (as long as a decode step), a dead row costs a step little.
            if len(batch.rows) - len(keep) >= len(keep) or not policy.keeps_finished_rows:
                batch.select(keep)
        tokens = nxt
        if len(batch.live) < len(batch.rows):
            tokens = nxt.new_full((len(batch.rows),), policy.tokenizer.pad_token_id)
            tokens[torch.tensor(batch.live, device=dev)] = nxt
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        shared = {} if batch.prefix is None else {"shared_prefix": batch.prefix}
        logits = policy.model(
            input_ids=tokens[:, None],
            attention_mask=batch.mask,
            position_ids=batch.next_pos[:, None],
            cache=batch.cache,
            use_cache=True,
            **shared,
        ).logits[:, -1]
        batch.logits = logits if len(batch.live) == len(batch.rows) else logits[torch.tensor(batch.live, device=dev)]
        batch.next_pos = batch.next_pos + 1

    def _admit(self, take: list[tuple[int, int]]) -> _Batch:
        """Prefill each distinct prompt of chunks `take` once and fan it out to its samples (new rows).
        Identical prompts (DVTS's subtrees all start from the problem) share one prefill."""
        keys = [tuple(self.prompt_ids[i]) for i, _ in take]
        slot: dict[tuple[int, ...], int] = {}  # prompt tokens -> its position among the prefilled prompts
        unique = []  # the first chunk of each distinct prompt
        for key, (i, _) in zip(keys, take):
            if key not in slot:
                slot[key] = len(unique)
                unique.append(i)
        policy, room = self.policy, self.params.max_tokens
        logits, cache, mask, pos = policy._prefill(
            [self.prompt_ids[i] for i in unique], [self.reused[i] for i in unique], 0 if self.shares_prefix else room
        )
        dev = policy.device
        fan = torch.repeat_interleave(
            torch.tensor([slot[k] for k in keys], device=dev), torch.tensor([c for _, c in take], device=dev)
        )
        prefix = None
        if self.shares_prefix:  # the prompts' KV stays once; each row's cache starts empty
            prefix = SharedPrefix.of_prefill(cache, mask, fan)
            cache, mask = reserved_cache(policy.model.config, room), mask.new_zeros(len(fan), 0)
        else:
            cache.batch_select_indices(fan)
            mask = mask[fan]
        rows = []
        for i, c in take:
            for _ in range(c):
                row = len(self.owner)
                self.owner.append(i)
                self.rows[i].append(row)
                self.tokens.append([])
                self.reasons.append(None)
                self.since_start.append(self.window)
                rows.append(row)
        return _Batch(cache, mask, pos[fan, -1] + 1, logits[fan], rows, prefix=prefix)

    def _stash(self, row: int, j: int) -> None:
        """Keep the KV of a row that just finished (batch row j), under the tokens fed so far (the token that
        ended it by a stop string or the length limit was sampled but never fed; EOS is not kept)."""
        fed = self.tokens[row] if self.reasons[row] == "eos" else self.tokens[row][:-1]
        batch = self.batch
        entry = (
            Entry.of_row(batch.cache, j, batch.mask[j])
            if batch.prefix is None
            else batch.prefix.row_entry(batch.cache, j, batch.mask[j])
        )
        i = self.owner[row]
        ids = self.prompt_ids[i] + fed
        self.stash.put(ids, entry)
        self.stash.texts.add(self.prompts[i] + self.policy.tokenizer.decode(fed, skip_special_tokens=True), ids)


@dataclass
class _Batch:
    """The rows decoding together: their KV cache, attention mask, next positions, sample ids, the positions of
    the rows still decoding (`live`; the others finished, not yet compacted away) and their pending logits."""

    cache: DynamicCache
    mask: torch.Tensor
    next_pos: torch.Tensor
    logits: torch.Tensor
    rows: list[int]
    live: list[int] = field(default_factory=list)
    prefix: SharedPrefix | None = None  # the prompts' KV, when `cache` holds only the rows' own tokens

    def __post_init__(self):
        self.live = self.live or list(range(len(self.rows)))

    def select(self, keep: list[int]) -> None:
        """Keep only the live rows at positions `keep`, compacted (their KV copied); logits stay as they are."""
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_pos = self.mask[index], self.next_pos[index]
        if self.prefix is not None:
            self.prefix = self.prefix.select(index)
        self.rows = [self.rows[j] for j in keep]
        self.live = list(range(len(keep)))

    def joined(self, other: _Batch, room: int) -> _Batch:
        """These rows (the live ones) and `other`'s in one batch, with room for `room` more tokens."""
        if len(self.live) < len(self.rows):
            self.select(self.live)
        cache, mask = join_rows(self.cache, self.mask, other.cache, other.mask, room)
        return _Batch(
            cache,
            mask,
            torch.cat([self.next_pos, other.next_pos]),
            torch.cat([self.logits, other.logits]),
            self.rows + other.rows,
            prefix=None if self.prefix is None else self.prefix.joined(other.prefix),
        )


class StopOnStrings(StoppingCriteria):
    """Stop a row of ``model.generate`` once a stop string appears in its *generated* text.

    transformers' own ``stop_strings`` also matches across the prompt boundary, so a prefix that
    ends with the step delimiter (every beam-search prefix does) would stop at once. (Our own
    decode loop checks generated tokens only; this criterion is for callers of ``model.generate``.)
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
    return ids
