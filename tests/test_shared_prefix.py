"""Shared-prefix attention: a prompt's KV held once for all its samples gives what copying it to every row gives."""

from __future__ import annotations

import pytest
import torch

from synth.generate import shared_prefix as sp
from synth.generate.engine import SamplingParams

HEADS, KV_HEADS, DIM = 4, 2, 8


class _Module:
    layer_idx = 0
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


def _prefix(widths: list[int], group: list[int], gen) -> sp.SharedPrefix:
    """Prompts of `widths` tokens (left padded to the longest) continued by rows `group`."""
    width = max(widths)
    k = torch.randn(len(widths), KV_HEADS, width, DIM, generator=gen)
    v = torch.randn(len(widths), KV_HEADS, width, DIM, generator=gen)
    mask = torch.tensor([[False] * (width - w) + [True] * w for w in widths])
    return sp.SharedPrefix([k], [v], mask, torch.tensor(group))


def _reference(prefix: sp.SharedPrefix, q, k, v, own_mask):
    """SDPA over each row's prompt KV copied in front of its own (the engine without sharing)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = prefix.group
    keys = torch.cat([prefix.keys[0][g], k], dim=2)
    values = torch.cat([prefix.values[0][g], v], dim=2)
    mask = torch.cat([prefix.mask[g], own_mask], dim=1)[:, None, None, :]
    return sdpa_attention_forward(_Module, q, keys, values, mask, scaling=DIM**-0.5)[0]


@pytest.mark.parametrize("math_only", [False, True], ids=["cpu-kernel", "math"])
def test_attention_over_a_shared_prefix_equals_attention_over_copies(monkeypatch, math_only):
    monkeypatch.setattr(sp, "_MATH_ONLY", math_only)
    gen = torch.Generator().manual_seed(0)
    layouts = [
        ([5, 9, 3], [0, 0, 0, 1, 2, 2]),  # unequal group sizes, padded prompts
        ([4, 6], [0, 1]),  # one row per prompt, in order (no gather)
        ([5, 9], [0, 0, 1, 1]),  # two rows per prompt, in order (a prefill's fan-out: regrouped by a reshape)
        ([7, 2, 5], [1, 1, 0, 2]),  # rows not in prompt order
    ]
    for widths, group in layouts:
        prefix = _prefix(widths, group, gen)
        rows, own = len(group), 3
        q = torch.randn(rows, HEADS, 1, DIM, generator=gen)
        k, v = (
            torch.randn(rows, KV_HEADS, own, DIM, generator=gen),
            torch.randn(rows, KV_HEADS, own, DIM, generator=gen),
        )
        own_mask = torch.ones(rows, own, dtype=torch.bool)
        own_mask[0, :2] = False  # a row that joined later
        got = prefix.attend(0, q, k, v, own_mask[:, None, None, :], DIM**-0.5)
        want = _reference(prefix, q, k, v, own_mask)
        assert torch.allclose(got, want, atol=1e-5), (widths, group, (got - want).abs().max())
        # rows dropped (a prompt with none left goes), then another batch joined, narrower and wider
        keep = torch.tensor([j for j in range(rows) if group[j] != group[-1]])
        kept = prefix.select(keep)
        assert len(kept.mask) == len(set(group)) - 1
        for other_widths in ([2], [max(widths) + 4, 1]):
            other = _prefix(other_widths, list(range(len(other_widths))), gen)
            both = kept.joined(other)
            n = len(keep) + len(other_widths)
            q = torch.randn(n, HEADS, 1, DIM, generator=gen)
            k, v = torch.randn(n, KV_HEADS, own, DIM, generator=gen), torch.randn(n, KV_HEADS, own, DIM, generator=gen)
            mask = torch.ones(n, own, dtype=torch.bool)
            got = both.attend(0, q, k, v, mask[:, None, None, :], DIM**-0.5)
            want = torch.cat(
                [
                    _reference(kept, q[: len(keep)], k[: len(keep)], v[: len(keep)], mask[: len(keep)]),
                    _reference(other, q[len(keep) :], k[len(keep) :], v[len(keep) :], mask[len(keep) :]),
                ]
            )
            assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_engine_decodes_the_same_with_and_without_a_shared_prefix(varied_policy, monkeypatch):
    """Every decode step's logits (to rounding), the continuations, and the KV kept for the next call are
    those of copying each prompt's KV to its rows. (Greedy: in a random tiny model the next-token
    distribution is flat, so rounding alone moves sampled draws.)"""
    from synth.generate.hf import TransformersPolicy

    tiny_policy = varied_policy  # greedy text that varies; batches of 4 rows, so prompts join running ones
    prompts = [tiny_policy.chat_prompt(q) for q in ("2+2?", "What is 17 plus 25? Think step by step.", "3*3?")]
    params = SamplingParams(n=3, max_tokens=16, temperature=0, keep_cache=True, stop=["b", "k", "v"])
    sample = TransformersPolicy._sample
    out, steps, stashes = {}, {}, {}
    assert tiny_policy.shares_prefix
    for shared in (True, False):
        logits = steps[shared] = []
        monkeypatch.setattr(
            TransformersPolicy, "_sample", staticmethod(lambda x, p, g, seen=logits: seen.append(x) or sample(x, p, g))
        )
        tiny_policy.shares_prefix = shared
        tiny_policy.new_search()
        got = tiny_policy.generate(prompts, params)
        out[shared] = [[(c.text, c.num_tokens, c.stop_reason) for c in x] for x in got]
        stashes[shared] = tiny_policy.stash.entries
    tiny_policy.shares_prefix = True
    assert out[True] == out[False]
    assert len({n for x in out[True] for _, n, _ in x}) > 1  # rows end at different steps
    assert len(steps[True]) == len(steps[False]) > 3
    for a, b in zip(steps[True], steps[False]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert len(stashes[True]) == len(stashes[False]) > 0
    for a, b in zip(stashes[True], stashes[False]):
        for x, y in zip(a.keys + a.values, b.keys + b.values):
            assert x.shape == y.shape and torch.allclose(x, y, atol=1e-5)


def test_models_without_sdpa_keep_their_attention(tokenizer):
    """An eager-attention model is left as it is (the engine copies prompts' KV to rows instead)."""
    from conftest import tiny_llama_config
    from transformers import LlamaForCausalLM

    from synth.generate.hf import TransformersPolicy

    config = tiny_llama_config(tokenizer)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    policy = TransformersPolicy("", model=model, tokenizer=tokenizer, system_prompt=None)
    assert not policy.shares_prefix and model.config._attn_implementation == "eager"
    got = policy.generate([policy.chat_prompt("1+1?")], SamplingParams(n=2, max_tokens=4, temperature=0))
    assert len(got[0]) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_attention_shares_kv_heads_and_gives_the_same_logits(tokenizer, dtype, monkeypatch):
    """`gqa_sdpa` (KV heads shared by their query heads) against transformers' SDPA (KV heads copied) on a padded
    batch, prefilled whole and then on a kept cache: the same bits."""
    from conftest import tiny_llama_config
    from transformers import DynamicCache, LlamaForTokenClassification

    from synth.generate.gqa_sdpa import NAME, use_gqa_sdpa

    sdpa, grouped = torch.nn.functional.scaled_dot_product_attention, []

    def spy(*args, **kwargs):
        grouped.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)

    torch.manual_seed(0)
    model = LlamaForTokenClassification(
        tiny_llama_config(tokenizer, num_attention_heads=4, num_key_value_heads=2, num_labels=1)
    )
    model.config._attn_implementation = "sdpa"
    model = model.to(dtype).eval()
    ids = torch.randint(0, 100, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4], mask[2, :7] = 0, 0  # left padding

    def logits() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            whole = model(input_ids=ids, attention_mask=mask).logits
            cache = DynamicCache(config=model.config)
            model(input_ids=ids[:, :8], attention_mask=mask[:, :8], cache=cache, use_cache=True)
            pos = torch.arange(8, 12).expand(3, -1)
            rest = model(input_ids=ids[:, 8:], attention_mask=mask, position_ids=pos, cache=cache).logits
        return whole, rest

    copied = logits()
    assert grouped and not any(grouped)  # transformers copies the KV heads under a mask
    grouped.clear()
    assert use_gqa_sdpa(model) and model.config._attn_implementation == NAME
    shared = logits()
    assert grouped and all(grouped)
    for a, b in zip(copied, shared):
        assert torch.equal(a, b), (a - b).abs().max()
