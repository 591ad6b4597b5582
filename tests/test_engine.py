import dataclasses

import pytest

from synth.generate.engine import SamplingParams


def test_left_padding_batch_matches_single(tiny_policy):
    """Greedy output of a short prompt must not change when batched with a long one (mask + positions)."""
    short = tiny_policy.chat_prompt("1+1?")
    long = tiny_policy.chat_prompt("What is the sum of all the integers from one to one hundred, inclusive? " * 3)
    params = SamplingParams(n=1, max_tokens=12, temperature=0)
    alone = tiny_policy.generate([short], params)[0][0]
    batched = tiny_policy.generate([long, short], params)[1][0]
    assert alone.text == batched.text and alone.num_tokens == batched.num_tokens


def test_n_samples_seeded_and_reproducible(tiny_policy):
    prompts = [tiny_policy.chat_prompt(q) for q in ("2+2?", "3*3?", "10-4?")]
    params = SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=7)
    a = tiny_policy.generate(prompts, params)
    b = tiny_policy.generate(prompts, params)
    assert [len(x) for x in a] == [4, 4, 4]
    assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]
    texts = {c.text for x in a for c in x}
    assert len(texts) > 1  # sampling, not greedy
    for x in a:
        for c in x:
            assert 1 <= c.num_tokens <= 8
            assert c.stop_reason in ("eos", "length", "stop")


def test_stop_string_cuts_text(tiny_policy):
    """A stop string that the model emits ends the continuation and is removed from the text."""
    prompts = [tiny_policy.chat_prompt("count")]
    free = tiny_policy.generate(prompts, SamplingParams(n=1, max_tokens=20, temperature=0))[0][0]
    assert len(free.text) > 2
    stop = free.text[3:5] if free.text[3:5].strip() else free.text[2:4]
    cut = tiny_policy.generate(prompts, SamplingParams(n=1, max_tokens=20, temperature=0, stop=[stop]))[0][0]
    assert cut.stop_reason == "stop", repr((free, stop, cut))
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.num_tokens <= free.num_tokens
    kept = tiny_policy.generate(
        prompts, SamplingParams(n=1, max_tokens=20, temperature=0, stop=[stop], include_stop=True)
    )[0][0]
    assert kept.text == cut.text + stop and kept.num_tokens == cut.num_tokens  # the text after the stop is dropped


def test_stop_strings_ignore_the_prompt(tokenizer):
    """A prefix ending with the delimiter (every beam-search prefix) must not stop generation at once."""
    import torch

    from synth.generate.hf import StopOnStrings

    prompt = tokenizer("Step 1: 2+2=4\n\n", add_special_tokens=False).input_ids
    gen_plain = tokenizer(" So", add_special_tokens=False).input_ids
    gen_stop = tokenizer(" So 4\n\n", add_special_tokens=False).input_ids
    stop = StopOnStrings(tokenizer, ["\n\n"], prompt_len=len(prompt))
    pad = tokenizer.pad_token_id
    rows = [prompt + gen_plain + [pad] * (len(gen_stop) - len(gen_plain)), prompt + gen_stop]
    # both rows are checked once they have the same length; only the second has "\n\n" in its own text
    assert stop(torch.tensor(rows), None).tolist() == [False, True]


def test_kept_kv_gives_the_same_continuations_as_a_fresh_prefill(tiny_policy):
    """keep_cache: the next call prefills only the tokens its prompts add to kept sequences, and
    decodes exactly what a full prefill would (greedy, fp32)."""
    import torch

    from synth.generate.kv_stash import KVStash

    prompts = [tiny_policy.chat_prompt(q) for q in ("2+2?", "What is the sum of 17 and 25, step by step?")]
    first = tiny_policy.generate(prompts, SamplingParams(n=3, max_tokens=6, temperature=1.0, seed=3, keep_cache=True))
    assert len(tiny_policy.stash.entries) == 6
    # like beam search: each continuation (text re-tokenised) plus a delimiter becomes a prompt
    extended = [p + c.text + "\n\n" for p, cs in zip(prompts, first) for c in cs] + [
        tiny_policy.chat_prompt("unrelated")
    ]
    ids = [tiny_policy.tokenizer(p, add_special_tokens=False).input_ids for p in extended]
    matches = [tiny_policy.stash.match(x) for x in ids]
    with torch.inference_mode():
        spliced = tiny_policy._prefill(ids, matches)[0]
        full = tiny_policy._prefill(ids, [(None, 0)] * len(ids))[0]
    assert torch.allclose(spliced, full, atol=1e-4), (spliced - full).abs().max()
    greedy = SamplingParams(n=1, max_tokens=8, temperature=0)
    reused = tiny_policy.generate(extended, greedy)
    kept_texts = tiny_policy.stash.texts
    tiny_policy.stash = KVStash()
    tiny_policy.stash.texts = kept_texts  # the same prompt ids (`token_memo`), no kept KV
    fresh = tiny_policy.generate(extended, greedy)
    assert [c[0].text for c in reused] == [c[0].text for c in fresh]
    prompt_len = [len(tiny_policy.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts for _ in range(3)]
    assert all(c[0].cached_tokens >= n - 2 for c, n in zip(reused[:6], prompt_len)), [
        c[0].cached_tokens for c in reused
    ]
    # an unrelated problem reuses exactly the chat template's shared head (system prompt, role tags)
    ids = [tiny_policy.tokenizer(p, add_special_tokens=False).input_ids for p in (prompts[0], extended[-1])]
    head = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    assert reused[-1][0].cached_tokens == head and all(c[0].cached_tokens == 0 for c in fresh)
    # a call without keep_cache leaves the kept KV alone (lookahead rollouts sit between expansions)
    tiny_policy.generate(prompts, SamplingParams(n=1, max_tokens=6, temperature=1.0, seed=3, keep_cache=True))
    kept = tiny_policy.stash
    tiny_policy.generate(prompts, greedy)
    assert tiny_policy.stash is kept


def test_a_prompt_extending_a_kept_continuation_keeps_its_tokens(varied_policy):
    """The next call encodes a kept continuation's text plus a step as the ids the policy wrote plus the step's:
    its kept KV covers the whole path, where re-tokenizing the whole text would merge tokens across the seam."""
    policy = varied_policy
    prompts = [policy.chat_prompt(q) for q in ("2+2?", "What is 17 + 25?")]
    first = policy.generate(prompts, SamplingParams(n=4, max_tokens=12, temperature=1.0, seed=5, keep_cache=True))
    kept = policy.stash
    extended = [p + c.text + " So" for p, cs in zip(prompts, first) for c in cs]
    second = policy.generate(extended, SamplingParams(n=1, max_tokens=2, temperature=1.0, seed=5, keep_cache=True))
    prompt_len = [policy.count_tokens(p) for p in prompts for _ in range(4)]
    fed = [c.num_tokens - 1 for cs in first for c in cs]  # the last sampled token (or EOS) was never fed
    cached = [cs[0].cached_tokens for cs in second]
    assert all(got >= n + f for got, n, f in zip(cached, prompt_len, fed)), (cached, prompt_len, fed)
    retokenized = [kept.match(policy.tokenizer(x, add_special_tokens=False).input_ids)[1] for x in extended]
    assert any(r < n + f for r, n, f in zip(retokenized, prompt_len, fed))  # what re-tokenizing would have kept
    assert policy.stash.texts.longest_prefix(extended[0] + " 4") == extended[0]  # this call's prompts are kept too


def test_token_memo_finds_the_longest_remembered_prefix():
    from synth.generate.token_memo import TokenMemo

    memo = TokenMemo()
    for text, ids in [("ab", [1]), ("abcd", [1, 2]), ("abd", [1, 3]), ("b", [4]), ("ab", [9])]:
        memo.add(text, ids)
    assert len(memo) == 4 and memo.longest_prefix("ab") == "ab"  # the first ids for a text stay
    assert memo.longest_prefix("abcz") == "ab" and memo.longest_prefix("abcde") == "abcd"
    assert memo.longest_prefix("abda") == "abd" and memo.longest_prefix("a") is None
    assert memo.longest_prefix("c") is None and memo.longest_prefix("") is None
    assert memo.encode("abcdxy", lambda t: [ord(c) for c in t]) == [1, 2, ord("x"), ord("y")]
    assert memo.encode("abd", lambda t: [0]) == [1, 3] and memo.encode("zz", lambda t: [7]) == [7]


def test_kv_stash_longest_prefix_and_byte_budget():
    import torch

    from synth.generate.kv_stash import Entry, KVStash

    def entry(n):  # one layer, 2 heads, n tokens, head dim 4 (fp32): 64 bytes per token for K and V
        return Entry([torch.zeros(2, n, 4)], [torch.zeros(2, n, 4)])

    stash = KVStash(max_bytes=64 * 10)
    assert stash.put([1, 2, 3, 4], entry(4)) and stash.put([1, 2, 9], entry(3))
    assert not stash.put([5, 6, 7, 8], entry(4))  # 11 tokens > 10: refused, nothing half-stored
    assert stash.bytes == 64 * 7 and len(stash.entries) == 2
    found, n = stash.match([1, 2, 3, 4, 5])
    assert found is stash.entries[0] and n == 4
    assert stash.match([1, 2, 3, 4]) == (stash.entries[0], 3)  # the last prompt token always runs
    assert stash.match([1, 2, 9, 9])[1] == 3 and stash.match([5, 6, 7])[0] is None


def test_a_kept_row_is_a_copy_of_its_attended_positions():
    """A row's attended positions, as one run (a slice) or scattered (indices): the copy holds exactly those
    tokens and shares no memory with the cache, which goes on decoding."""
    import torch

    from synth.generate.kv_stash import Entry, positions

    x = torch.arange(2 * 6 * 3, dtype=torch.float32).view(1, 2, 6, 3)  # (rows, heads, tokens, dim)
    layer = type("Layer", (), {"keys": x, "values": -x})()
    cache = type("Cache", (), {"layers": [layer]})()
    for mask in ([0, 0, 1, 1, 1, 0], [0, 1, 0, 1, 1, 0], [0] * 6, [1] * 6):
        m = torch.tensor(mask)
        assert isinstance(positions(m), slice) == (mask != [0, 1, 0, 1, 1, 0])
        e = Entry.of_row(cache, 0, m)
        assert torch.equal(e.keys[0], x[0][:, m.bool()]) and torch.equal(e.values[0], -x[0][:, m.bool()])
        assert e.keys[0].untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_reserved_layer_holds_what_a_dynamic_layer_holds():
    """Appends, row selection (compaction and fan-out), growth past the room, crop: same tensors as transformers'."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from synth.generate.reserved_cache import ReservedLayer

    torch.manual_seed(0)
    ours, ref = ReservedLayer(capacity=6), DynamicLayer()

    def step(b: int, t: int):
        k, v = torch.randn(b, 2, t, 4), torch.randn(b, 2, t, 4)
        got, want = ours.update(k, v), ref.update(k, v)
        assert all(torch.equal(x, y) for x, y in zip(got, want))

    step(3, 4)
    for select in ([0, 0, 1, 1, 2, 2], [5, 1, 3], [2]):  # fan-out into a new buffer, then in-place compaction
        index = torch.tensor(select)
        ours.batch_select_indices(index), ref.batch_select_indices(index)
        step(len(select), 1)
    step(1, 5)  # past the reserved room: grows
    ours.crop(-2), ref.crop(-2)
    step(1, 1)
    assert ours.get_seq_length() == ref.get_seq_length() == 11
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


def test_sampler_draws_from_the_softmax_and_respects_top_p():
    import torch

    from synth.generate.hf import TransformersPolicy

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, -30.0]]).repeat(40000, 1)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(TransformersPolicy._sample(logits, SamplingParams(temperature=0.8), gen), minlength=5)
    want = (logits[0] / 0.8).softmax(-1)
    se = (want * (1 - want) / len(logits)).sqrt()
    assert ((counts / len(logits) - want).abs() <= 4 * se + 1e-4).all(), (counts / len(logits), want)
    # top_p 0.8 keeps tokens 2 and 1 (0.72 + 0.21 of the mass), renormalised
    nucleus = TransformersPolicy._sample(logits, SamplingParams(temperature=0.8, top_p=0.8), gen)
    assert set(nucleus.tolist()) == {1, 2}
    share = (nucleus == 2).float().mean().item()
    assert abs(share - want[2] / (want[1] + want[2])) < 0.01
    greedy = TransformersPolicy._sample(logits[:3], SamplingParams(temperature=0), gen)
    assert greedy.tolist() == [2, 2, 2]


def test_packed_linears_give_the_plain_models_logits(tiny_model_dir):
    """Weights packed once for oneDNN on a CPU: fp32 logits equal the plain model's up to rounding, bf16 ones
    (where the CPU has native bf16) bit for bit; other devices and dtypes are left as they are."""
    import pytest
    import torch
    from transformers import AutoModelForCausalLM

    from synth.generate.packed_linear import PackedLinear, can_pack, pack_linears

    ids = torch.tensor([[1, 5, 9, 200, 7], [3, 3, 8, 1000, 2]])
    fp16 = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16)
    assert pack_linears(fp16) == 0
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
        if not can_pack(model):
            assert dtype == torch.bfloat16, "fp32 packs on every CPU with oneDNN"
            pytest.skip("no native bf16 (AMX / AVX512-BF16) on this CPU")
        with torch.inference_mode():
            plain = model(input_ids=ids).logits
            assert pack_linears(model) == 2 * 7 + 1  # q k v o gate up down per layer, and the LM head
            packed = model(input_ids=ids).logits
        assert isinstance(model.lm_head, PackedLinear)
        if dtype == torch.bfloat16:
            assert torch.equal(plain, packed)
        else:
            assert torch.allclose(plain, packed, atol=1e-5, rtol=1e-5), (plain - packed).abs().max()
            model.to(torch.float16)  # a dtype it cannot pack: plain F.linear on the converted weight
            assert model.lm_head.packed is None and model(input_ids=ids).logits.dtype == torch.float16


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "per-row-kv"])
def test_rows_joining_a_running_batch_decode_what_they_decode_alone(varied_policy, monkeypatch, shared):
    """Chunks join the batch as rows finish (`join_rows`): every row's greedy tokens are those of its prompt
    decoded alone, whether the joining prompts are wider or narrower than the running rows (their whole KV,
    or with shared-prefix attention their prompts' KV)."""
    from synth.generate import hf
    from synth.generate.shared_prefix import SharedPrefix

    policy = varied_policy
    assert policy.shares_prefix
    policy.shares_prefix = shared
    questions = ["1+1?", "What is 17 plus 25? Think step by step and box the answer.", "3*3?", "2+2?"]
    questions += ["A train leaves at noon at 60 miles per hour; when has it gone 150 miles?", "7-5?"]
    prompts = [policy.chat_prompt(q) for q in questions]
    params = SamplingParams(n=2, max_tokens=12, temperature=0, stop=["b", "k", "v"])  # rows stop at different steps
    joins = []
    real = hf.join_rows

    def counted(a, mask_a, b, mask_b, room):
        joins.append((mask_a.shape[1], mask_b.shape[1]))
        return real(a, mask_a, b, mask_b, room)

    real_joined = SharedPrefix.joined

    def joined(self, other):
        joins.append((self.mask.shape[1], other.mask.shape[1]))
        return real_joined(self, other)

    # shared: the rows' own caches join empty, and the prompts' KV is what joins wider or narrower
    monkeypatch.setattr(*((SharedPrefix, "joined", joined) if shared else (hf, "join_rows", counted)))
    together = policy.generate(prompts, params)
    # wider and narrower joiners (prompts join sorted by length, so prompts' KV only joins wider or as wide)
    assert any(a < b for a, b in joins) and (shared or any(a > b for a, b in joins)), joins
    alone = [policy.generate([p], params)[0] for p in prompts]
    assert [[(c.text, c.num_tokens, c.stop_reason) for c in x] for x in together] == [
        [(c.text, c.num_tokens, c.stop_reason) for c in x] for x in alone
    ]
    assert len({c.num_tokens for x in together for c in x}) > 2


def test_join_rows_matches_separate_caches():
    """The next-token attention over a joined cache equals each part's own, in both width orders."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synth.generate.reserved_cache import join_rows, reserved_cache

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    model = LlamaForCausalLM(cfg).eval()

    def part(ids: torch.Tensor, pads: list[int]):
        mask = torch.ones_like(ids)
        for r, p in enumerate(pads):
            mask[r, :p] = 0
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = reserved_cache(cfg, ids.shape[1] + 4)
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
        return cache, mask, pos[:, -1] + 1

    def next_logits(cache, mask, pos, tok):
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        with torch.inference_mode():
            return model(input_ids=tok, attention_mask=mask, position_ids=pos[:, None], cache=cache).logits[:, -1]

    for wa, wb in ((5, 9), (9, 5)):
        ids_a, ids_b, tok = torch.randint(0, 64, (2, wa)), torch.randint(0, 64, (3, wb)), torch.randint(0, 64, (5, 1))
        (ca, ma, pa), (cb, mb, pb) = part(ids_a, [0, 2]), part(ids_b, [1, 0, 3])
        want = torch.cat([next_logits(ca, ma, pa, tok[:2]), next_logits(cb, mb, pb, tok[2:])])
        (ca, ma, pa), (cb, mb, pb) = part(ids_a, [0, 2]), part(ids_b, [1, 0, 3])
        cache, mask = join_rows(ca, ma, cb, mb, room=4)
        assert mask.shape[1] == cache.get_seq_length() <= max(wa, wb)
        got = next_logits(cache, mask, torch.cat([pa, pb]), tok)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_finished_rows_leave_the_batch_lazily_and_change_no_row(varied_policy, monkeypatch):
    """Finished rows stay in the batch (fed a pad) until they outnumber the live ones: fewer compactions, and
    every row's greedy tokens are those of compacting at once."""
    from synth.generate import hf

    policy = varied_policy
    policy.batch_size = 8
    questions = ["1+1?", "What is 17 plus 25?", "3*3?", "A train leaves at noon.", "7-5?", "Name a colour.", "2*8?"]
    prompts = [policy.chat_prompt(q) for q in questions]
    params = SamplingParams(n=2, max_tokens=20, temperature=0, stop=["b", "k", "v", "y"])
    compactions = []
    real = hf._Batch.select
    monkeypatch.setattr(hf._Batch, "select", lambda self, keep: compactions.append(len(keep)) or real(self, keep))
    out = {}
    for lazy in (True, False):
        policy.keeps_finished_rows, compactions[:] = lazy, []
        got = policy.generate(prompts, params)
        out[lazy] = ([[(c.text, c.num_tokens, c.stop_reason) for c in x] for x in got], len(compactions))
    assert out[True][0] == out[False][0]
    assert len({n for x in out[True][0] for _, n, _ in x}) > 2  # rows end at different steps
    assert out[True][1] < out[False][1], (out[True][1], out[False][1])


def test_stop_checks_skip_rows_whose_window_cannot_hold_a_stop(varied_policy, monkeypatch):
    """A row's recent text is decoded only while its window holds a token that may start a stop string:
    the same continuations as decoding every row at every token, with fewer decodes."""
    policy = varied_policy
    questions = ["1+1?", "What is 17 plus 25?", "3*3?", "A train leaves at noon.", "7-5?", "Name a colour."]
    prompts = [policy.chat_prompt(q) for q in questions]
    params = SamplingParams(n=3, max_tokens=24, temperature=1.0, seed=5, stop=["xc", "z", "q", "%"])
    decodes = []
    decode = policy.tokenizer.decode
    monkeypatch.setattr(policy.tokenizer, "decode", lambda *a, **k: decodes.append(1) or decode(*a, **k))
    out = {}
    for skips in (True, False):
        if not skips:
            monkeypatch.setattr(policy, "stop_starts", lambda stops: None)
        decodes[:] = []
        got = policy.generate(prompts, params)
        out[skips] = ([[(c.text, c.num_tokens, c.stop_reason) for c in x] for x in got], len(decodes))
    assert out[True][0] == out[False][0]
    assert any(r == "stop" for x in out[True][0] for _, _, r in x)
    assert out[True][1] < 0.5 * out[False][1], (out[True][1], out[False][1])


def test_tail_rows_end_a_calls_last_rows_early_as_at_max_tokens(varied_policy):
    """With `tail_rows`, once no prompt waits and at most that many rows still decode, they end as if at
    max_tokens: each is a prefix of its uncut text, the rest are unchanged."""
    policy = varied_policy
    questions = ["1+1?", "What is 17 plus 25?", "3*3?", "A train leaves at noon.", "7-5?", "Name a colour."]
    prompts = [policy.chat_prompt(q) for q in questions]
    params = SamplingParams(n=2, max_tokens=24, temperature=0, stop=["b", "k", "v", "y"])
    full = policy.generate(prompts, params)
    cut = policy.generate(prompts, dataclasses.replace(params, tail_rows=2))
    pairs = [(a, b) for x, y in zip(full, cut) for a, b in zip(x, y)]
    assert all(a.text.startswith(b.text) and b.num_tokens <= a.num_tokens for a, b in pairs)
    shortened = [(a, b) for a, b in pairs if b.num_tokens < a.num_tokens]
    assert 1 <= len(shortened) <= 2 and all(b.stop_reason == "length" for _, b in shortened)
    assert all(a == b for a, b in pairs if (a, b) not in shortened)
    assert sum(a.num_tokens for a, _ in pairs) > sum(b.num_tokens for _, b in pairs)


def test_identical_prompts_share_one_prefill(tiny_policy, monkeypatch):
    """DVTS's subtrees start from the same prompt: a call prefills each distinct prompt once, and every
    sample still decodes on its own."""
    p, q = tiny_policy.chat_prompt("2+2?"), tiny_policy.chat_prompt("What is 17 plus 25?")
    prefilled = []
    prefill = type(tiny_policy)._prefill

    def spy(self, ids, reused, max_tokens=0):
        prefilled.append(len(ids))
        return prefill(self, ids, reused, max_tokens)

    monkeypatch.setattr(type(tiny_policy), "_prefill", spy)
    greedy = SamplingParams(n=2, max_tokens=10, temperature=0)
    out = tiny_policy.generate([p, q, p, p], greedy)
    assert prefilled == [2]
    alone = tiny_policy.generate([p], greedy)[0]
    assert [c.text for c in out[0]] == [c.text for c in out[2]] == [c.text for c in out[3]] == [c.text for c in alone]
    sampled = tiny_policy.generate([p, p], SamplingParams(n=4, max_tokens=10, temperature=1.0, seed=3))
    assert len({c.text for x in sampled for c in x}) > 1  # one prefill, eight draws
