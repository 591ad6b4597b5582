"""Our PRM: a causal-LM backbone with a token-classification head read at each step's end.

A PRM directory holds a transformers checkpoint (or a peft adapter over a base model) and
`synth_prm.json`: {"format": "token-classification", "step_separator": "\\n\\n", "base_model": spec}.
With one label the step score is sigmoid(logit) (our soft-label BCE training); with two labels,
softmax(...)[1] (TRL's stepwise PRMs), so a PRM trained with TRL's format loads too.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache

from synth.generate.gqa_sdpa import use_gqa_sdpa
from synth.generate.kv_stash import DEFAULT_MAX_BYTES, Entry, KVStash, caller, fill_kept
from synth.generate.packed_linear import pack_linears
from synth.models import default_device, resolve_dtype
from synth.prm.format import encode_steps
from synth.prm.prefix import MIN_SHARED_TOKENS, Group, group_by_prefix

META = "synth_prm.json"


@dataclass
class ScoredEntry(Entry):
    """A scored sequence's KV, and the PRM's probability at each of its tokens."""

    probs: list[float] = field(default_factory=list)


class TokenClassificationPRM:
    def __init__(
        self,
        model,
        tokenizer,
        step_separator: str = "\n\n",
        batch_size: int = 32,
        max_length: int = 2048,
        device: str | None = None,
        dtype: str = "auto",
        share_prefixes: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.step_separator, self.batch_size, self.max_length = step_separator, batch_size, max_length
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        self.model.to(self.device, self.dtype).eval()
        use_gqa_sdpa(self.model)  # padded batches: KV heads shared by their query heads, not copied (same scores)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        # shared prefixes are read once: within a call (synth.prm.prefix), and from recent calls, whose
        # sequences' KV is kept (tree search scores each node's children after the node itself)
        self.share_prefixes = share_prefixes
        # sequences on kept KV run in passes of similar new lengths (off: `batch_size` at a time, padded to the longest)
        self.chunks_by_length = True
        self._stashes: dict[int, deque[KVStash]] = {}  # per search thread (`kv_stash.caller`; `overlap`)
        self.kept_bytes = DEFAULT_MAX_BYTES  # KV kept from recent calls, per thread; the oldest calls' go first

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw) -> TokenClassificationPRM:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from synth.models import resolve_model

        path = Path(path)
        check_checkpoint(path)
        meta = json.loads((path / META).read_text()) if (path / META).exists() else {}
        sep = meta.get("step_separator", kw.pop("step_separator", "\n"))  # TRL's default separator is "\n"
        tokenizer_dir = path
        if (path / "adapter_config.json").exists():
            from peft import PeftModel

            base = resolve_model(
                meta.get("base_model")
                or json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            )
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
        prm = cls(model, tokenizer, step_separator=sep, **kw)
        pack_linears(prm.model)  # ours to change (a model passed to the constructor is left as it is)
        prm.step_cut = meta.get("step_cut")  # where its training steps ended (synth label), if known
        return prm

    def new_search(self) -> None:
        """Forget the KV this search thread kept, so a batch scores the same wherever it runs (as the policy's)."""
        self._stashes.pop(caller(), None)

    @torch.inference_mode()
    def score(self, problems: list[str], steps: list[list[str]]) -> list[list[float]]:
        encoded = [
            encode_steps(self.tokenizer, p, s, self.step_separator, self.max_length) for p, s in zip(problems, steps)
        ]
        probs = self.token_probs([e.input_ids for e in encoded])
        out = []
        for e, p, s in zip(encoded, probs, steps):
            scores = [p[i] for i in e.label_positions]
            # steps cut by max_length inherit the last score we could compute
            out.append(scores + [scores[-1] if scores else 0.5] * (len(s) - len(scores)))
        return out

    def token_probs(self, sequences: list[list[int]]) -> list[list[float]]:
        """The PRM's probability at every token of every sequence. Sequences extending one scored by a recent
        call on this thread run only their new tokens on its kept KV; the rest share prefixes within the call."""
        recent = self._stashes.get(caller(), ()) if self.share_prefixes else ()
        matches = [max((st.match(s) for st in recent), key=lambda m: m[1], default=(None, 0)) for s in sequences]
        kept = [i for i, (_, n) in enumerate(matches) if n >= MIN_SHARED_TOKENS]
        fresh = sorted(set(range(len(sequences))) - set(kept))
        new_stash = KVStash() if self.share_prefixes else None
        if self.share_prefixes:
            groups = group_by_prefix([sequences[i] for i in fresh])
            groups = [Group(g.prefix_len, [fresh[m] for m in g.members]) for g in groups]
        else:
            groups = [Group(len(sequences[i]), [i]) for i in fresh]
        groups.sort(key=lambda g: g.prefix_len)
        out: list[list[float]] = [[] for _ in sequences]
        batch: list[Group] = []
        for g in groups + [None]:
            if g is None or (batch and sum(len(b.members) for b in batch) + len(g.members) > self.batch_size):
                self._forward(batch, sequences, out, new_stash)
                batch = []
            if g is not None:
                batch.append(g)
        kept.sort(key=lambda i: len(sequences[i]) - matches[i][1])
        new_tokens = [len(sequences[i]) - matches[i][1] for i in kept]
        chunks = (
            _similar_lengths(new_tokens, max_rows=self.batch_size)
            if self.chunks_by_length
            else [range(s, min(s + self.batch_size, len(kept))) for s in range(0, len(kept), self.batch_size)]
        )
        for chunk in chunks:
            self._forward_kept([kept[k] for k in chunk], sequences, matches, out, new_stash)
        if new_stash is not None:
            alive = {t.ident for t in threading.enumerate()}
            self._stashes = {k: v for k, v in self._stashes.items() if k in alive}  # threads gone: free their KV
            recent = self._stashes.setdefault(caller(), deque())
            recent.append(new_stash)
            while sum(st.bytes for st in recent) > self.kept_bytes:
                recent.popleft()
        return out

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits[..., 0]) if logits.shape[-1] == 1 else torch.softmax(logits, -1)[..., 1]

    def _forward(
        self, groups: list[Group], sequences: list[list[int]], out: list[list[float]], stash: KVStash | None
    ) -> None:
        """Prefixes (left padded) in one pass, then every member's suffix on its group's cache; every
        sequence's KV and probabilities go to `stash`."""
        if not groups:
            return
        dev = self.device
        prefixes = [sequences[g.members[0]][: g.prefix_len] for g in groups]
        width = max(len(p) for p in prefixes)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prefixes], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        suffixed = [(gi, m) for gi, g in enumerate(groups) for m in g.members if len(sequences[m]) > g.prefix_len]
        cache = DynamicCache(config=self.model.config) if suffixed or stash is not None else None
        prefix_probs = self._probs(
            self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=cache is not None
            ).logits
        ).tolist()
        for gi, (g, p) in enumerate(zip(groups, prefixes)):
            for m in g.members:
                out[m] = prefix_probs[gi][width - len(p) :]
                if len(sequences[m]) == g.prefix_len:
                    _keep(stash, sequences[m], cache, gi, mask[gi], out[m])
        # Suffixes of similar length share a pass, so little of it is padding; each pass gets its own
        # copy of the prefix cache, fanned out to its members.
        suffixed.sort(key=lambda x: len(sequences[x[1]]) - groups[x[0]].prefix_len)
        for chunk in _similar_lengths([len(sequences[m]) - groups[gi].prefix_len for gi, m in suffixed]):
            members = [suffixed[k] for k in chunk]
            fan = torch.tensor([gi for gi, _ in members], device=dev)
            chunk_cache = cache if chunk[-1] == len(suffixed) - 1 else copy.deepcopy(cache)
            chunk_cache.batch_select_indices(fan)
            suffixes = [sequences[m][groups[gi].prefix_len :] for gi, m in members]
            swidth = max(len(s) for s in suffixes)
            sids = torch.tensor([s + [self.pad_id] * (swidth - len(s)) for s in suffixes], device=dev)
            smask = torch.tensor([[1] * len(s) + [0] * (swidth - len(s)) for s in suffixes], device=dev)
            spos = torch.tensor([[groups[gi].prefix_len + k for k in range(swidth)] for gi, _ in members], device=dev)
            full_mask = torch.cat([mask[fan], smask], dim=1)
            logits = self.model(
                input_ids=sids, attention_mask=full_mask, position_ids=spos, cache=chunk_cache, use_cache=True
            ).logits
            for row, ((_, m), s) in enumerate(zip(members, suffixes)):
                out[m] = out[m] + self._probs(logits[row, : len(s)]).tolist()
                _keep(stash, sequences[m], chunk_cache, row, full_mask[row], out[m])

    def _forward_kept(
        self,
        rows: list[int],
        sequences: list[list[int]],
        matches: list[tuple[ScoredEntry | None, int]],
        out: list[list[float]],
        stash: KVStash | None,
    ) -> None:
        """Sequences whose first n tokens a recent call scored: [pad | kept KV | new tokens | pad] in one pass."""
        if not rows:
            return
        dev = self.device
        cache = DynamicCache(config=self.model.config)
        kept = fill_kept(cache, [matches[i] for i in rows])
        new = [sequences[i][matches[i][1] :] for i in rows]
        width = max(len(x) for x in new)
        ids = torch.tensor([x + [self.pad_id] * (width - len(x)) for x in new], device=dev)
        mask = torch.tensor(
            [
                [0] * (kept - matches[i][1]) + [1] * (matches[i][1] + len(x)) + [0] * (width - len(x))
                for i, x in zip(rows, new)
            ],
            device=dev,
        )
        pos = torch.tensor([[matches[i][1] + k for k in range(width)] for i in rows], device=dev)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True).logits
        for row, (i, x) in enumerate(zip(rows, new)):
            entry, n = matches[i]
            out[i] = entry.probs[:n] + self._probs(logits[row, : len(x)]).tolist()
            _keep(stash, sequences[i], cache, row, mask[row], out[i])


def _keep(stash: KVStash | None, ids: list[int], cache, row: int, mask_row: torch.Tensor, probs: list[float]) -> None:
    """Put row `row` of `cache` (its attended positions) into `stash` under `ids`, with its probabilities."""
    if stash is not None:
        stash.put(ids, ScoredEntry.of_row(cache, row, mask_row, probs=probs))


HEAD_NAMES = ("score.", "classifier.")  # the token-classification head of transformers' models


def check_checkpoint(path: Path) -> None:
    """A PRM directory must be a model (or adapter) directory whose weights hold a trained head."""
    from synth.prm.load import PRMError

    if (path / "adapter_config.json").exists():
        _require_head(path, "adapter_model.safetensors", "adapter_model.bin")
    elif (path / "config.json").exists():
        _require_head(path, "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    else:
        raise PRMError(f"PRM {path} has no config.json (nor adapter_config.json): not a model directory")


def _require_head(path: Path, *weight_files: str) -> None:
    """Refuse a directory whose weights hold no trained head: transformers would initialise one at random
    (a plain causal LM given as --prm), and search would run on random scores without a word."""
    from synth.prm.load import PRMError

    names = _weight_names(path, weight_files)
    if names is not None and not any(part in name for name in names for part in HEAD_NAMES):
        raise PRMError(
            f"{path} holds no PRM head (no score.* weights): it is a plain model, not a PRM; "
            "train one with `synth train-prm`, or use --prm default"
        )


def _weight_names(path: Path, weight_files: tuple[str, ...]) -> list[str] | None:
    """Tensor names stored in a checkpoint's weight files (None when they cannot be listed)."""
    for name in weight_files:
        f = path / name
        if not f.exists():
            continue
        if name.endswith(".index.json"):
            return list(json.loads(f.read_text()).get("weight_map", {}))
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as handle:
                return list(handle.keys())
        return list(torch.load(f, map_location="meta", weights_only=True))
    return None


def _similar_lengths(
    lengths: list[int], slack: float = 1.25, min_rows: int = 4, max_rows: int | None = None
) -> list[list[int]]:
    """Split ascending lengths into runs whose padded size stays within `slack` of their tokens (a run takes
    at least `min_rows`, at most `max_rows`)."""
    chunks: list[list[int]] = []
    tokens = 0
    for k, n in enumerate(lengths):
        full = max_rows is not None and chunks and len(chunks[-1]) >= max_rows
        if chunks and not full and (len(chunks[-1]) < min_rows or (len(chunks[-1]) + 1) * n <= slack * (tokens + n)):
            chunks[-1].append(k)
            tokens += n
        else:
            chunks.append([k])
            tokens = n
    return chunks
