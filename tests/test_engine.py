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
