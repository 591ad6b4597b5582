"""'+/-' token PRMs (Math-Shepherd, RLHFlow) and Qwen2.5-Math-PRM on tiny random models (no downloads)."""

from __future__ import annotations

import copy
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from synth.prm.load import PRMError, load_prm
from synth.prm.plus_minus import PlusMinusPRM
from synth.prm.qwen import SYSTEM, QwenMathPRM

PROBLEM = "What is 2+3?"
STEPS = ["2+3 = 5", "The answer is 5."]
LONG_PROBLEM = "Tom has 3 apples and buys 4 bags of 6 apples each. He eats 2. How many apples are left?"
LONG_STEPS = [
    "4 bags of 6 apples is 4 * 6 = 24 apples.",
    "With his 3 apples he has 24 + 3 = 27.",
    "He eats 2, so 27 - 2 = 25 are left.",
    "The answer is 25.",
]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class FakeLM(torch.nn.Module):
    """Logits known in closed form: '+' gets 0.1*t, '-' gets 1 - 0.05*t at position t, every other
    token 50 (so a softmax over the whole vocabulary would give ~0 for both)."""

    def __init__(self, vocab: int, good: int, bad: int):
        super().__init__()
        self.vocab, self.good, self.bad = vocab, good, bad
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **kw):
        b, n = input_ids.shape
        t = torch.arange(n, dtype=torch.float).expand(b, n)
        logits = torch.full((b, n, self.vocab), 50.0)
        logits[..., self.good] = 0.1 * t
        logits[..., self.bad] = 1 - 0.05 * t
        return SimpleNamespace(logits=logits)


class FakeTwoClass(torch.nn.Module):
    """A tuple output (like remote-code models): class-1 logit 0.1*t - 2, class-0 logit 0."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **kw):
        b, n = input_ids.shape
        t = torch.arange(n, dtype=torch.float).expand(b, n)
        return (torch.stack([torch.zeros(b, n), 0.1 * t - 2], dim=-1),)


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)  # the session fixture stays untouched
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    return tok


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory, qwen_tokenizer):
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(qwen_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        num_labels=2,
        pad_token_id=qwen_tokenizer.pad_token_id,
    )
    model = Qwen2ForTokenClassification(config)
    out = tmp_path_factory.mktemp("tiny-qwen-prm")
    model.save_pretrained(out)
    qwen_tokenizer.save_pretrained(out)
    (out / "synth_prm.json").write_text(json.dumps({"format": "qwen-math-prm"}))
    return out


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


# -- formatting ---------------------------------------------------------------------------------------
def test_math_shepherd_format(tokenizer):
    prm = PlusMinusPRM(FakeLM(len(tokenizer), 0, 1), tokenizer, style="math-shepherd", device="cpu")
    text, _ = prm.render(PROBLEM, STEPS)
    assert text == "What is 2+3? 2+3 = 5 ки\nThe answer is 5. ки"  # the model card's f"{question} {output}"
    enc = prm.encode(PROBLEM, STEPS)
    assert len(enc.positions) == len(STEPS)
    decode = lambda k: tokenizer.decode(enc.input_ids[: enc.positions[k] + 1], skip_special_tokens=True)  # noqa: E731
    assert decode(0) == "What is 2+3? 2+3 = 5 ки"
    assert decode(1) == "What is 2+3? 2+3 = 5 ки\nThe answer is 5. ки"
    # the model card's rule (positions where input_id == encode('ки')[-1]) finds the same positions
    tag_id = tokenizer.encode("ки")[-1]
    assert enc.positions == [t for t, i in enumerate(enc.input_ids) if i == tag_id]
    # '+'/'-' ids as in the references (encode(token)[-1])
    assert (prm.good_id, prm.bad_id) == (tokenizer.encode("+")[-1], tokenizer.encode("-")[-1])


def test_math_shepherd_tag_inside_a_step_is_not_a_scoring_position(tokenizer):
    prm = PlusMinusPRM(FakeLM(len(tokenizer), 0, 1), tokenizer, style="math-shepherd", device="cpu")
    enc = prm.encode(PROBLEM, ["Russian for 'ки' is odd", "5"])
    assert len(enc.positions) == 2
    assert tokenizer.decode(enc.input_ids[: enc.positions[0] + 1]) == "What is 2+3? Russian for 'ки' is odd ки"


def test_rlhflow_format(tokenizer):
    prm = PlusMinusPRM(FakeLM(len(tokenizer), 0, 1), tokenizer, style="rlhflow", device="cpu")
    conversation = [
        {"role": "user", "content": "What is 2+3? 2+3 = 5"},
        {"role": "assistant", "content": "+"},
        {"role": "user", "content": "The answer is 5."},
        {"role": "assistant", "content": "+"},
    ]
    text, _ = prm.render(PROBLEM, STEPS)
    assert text == tokenizer.apply_chat_template(conversation, tokenize=False)
    enc = prm.encode(PROBLEM, STEPS)
    assert len(enc.positions) == len(STEPS)
    for k, pos in enumerate(enc.positions):
        # the scoring position is the last token of "conversation so far + assistant header" ...
        prefix = tokenizer.apply_chat_template(conversation[: 2 * k + 1], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(enc.input_ids[: pos + 1]) == prefix
        # ... and the token it predicts is assistant turn k's '+'
        assert enc.input_ids[pos + 1] == tokenizer.encode("+")[-1]


def test_qwen_format(qwen_tokenizer):
    prm = QwenMathPRM(FakeTwoClass(), qwen_tokenizer, device="cpu")
    assert SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."
    assert prm.render(PROBLEM, STEPS) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n2+3 = 5<extra_0>The answer is 5.<extra_0><|im_end|>\n"
    )
    enc = prm.encode(PROBLEM, STEPS)
    step_id = qwen_tokenizer.convert_tokens_to_ids("<extra_0>")
    assert len(enc.positions) == len(STEPS) and all(enc.input_ids[p] == step_id for p in enc.positions)
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert qwen_tokenizer.decode(enc.input_ids[: enc.positions[0] + 1]) == head + "2+3 = 5<extra_0>"
    assert (
        qwen_tokenizer.decode(enc.input_ids[: enc.positions[1] + 1])
        == head + "2+3 = 5<extra_0>The answer is 5.<extra_0>"
    )
    # a literal separator inside a step is dropped, not scored
    assert len(prm.encode(PROBLEM, ["a<extra_0>b", "c"]).positions) == 2


# -- score extraction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["math-shepherd", "rlhflow"])
def test_plus_minus_score_is_softmax_over_two_tokens(tokenizer, style):
    good, bad = tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]
    prm = PlusMinusPRM(FakeLM(len(tokenizer), good, bad), tokenizer, style=style, device="cpu")
    enc = prm.encode(PROBLEM, STEPS)
    expected = [sigmoid(0.1 * p - (1 - 0.05 * p)) for p in enc.positions]  # P('+') = sigmoid(l+ - l-)
    [scores] = prm.score([PROBLEM], [STEPS])
    assert scores == pytest.approx(expected, abs=1e-6)


def test_qwen_score_is_class_one_probability(qwen_tokenizer):
    prm = QwenMathPRM(FakeTwoClass(), qwen_tokenizer, device="cpu")
    enc = prm.encode(PROBLEM, STEPS)
    [scores] = prm.score([PROBLEM], [STEPS])
    assert scores == pytest.approx([sigmoid(0.1 * p - 2) for p in enc.positions], abs=1e-6)


# -- batching, lengths, truncation --------------------------------------------------------------------
@pytest.mark.parametrize("style", ["math-shepherd", "rlhflow"])
def test_plus_minus_batching_invariance(tokenizer, tiny_lm, style):
    prm = PlusMinusPRM(tiny_lm, tokenizer, style=style, batch_size=8, device="cpu")
    alone = prm.score([PROBLEM], [STEPS])
    batched = prm.score([LONG_PROBLEM, PROBLEM, PROBLEM], [LONG_STEPS, STEPS, []])
    assert len(prm.encode(LONG_PROBLEM, LONG_STEPS).input_ids) > len(prm.encode(PROBLEM, STEPS).input_ids)  # padded
    assert batched[1] == pytest.approx(alone[0], abs=1e-5)
    assert [len(s) for s in batched] == [4, 2, 0]
    assert all(0.0 <= x <= 1.0 for s in batched for x in s)


def test_qwen_batching_invariance(tiny_qwen_dir):
    prm = QwenMathPRM.from_pretrained(tiny_qwen_dir, batch_size=8, device="cpu")
    alone = prm.score([PROBLEM], [STEPS])
    batched = prm.score([LONG_PROBLEM, PROBLEM], [LONG_STEPS, STEPS])
    assert batched[1] == pytest.approx(alone[0], abs=1e-5)
    assert [len(s) for s in batched] == [4, 2]
    assert len(set(alone[0])) == 2  # distinct positions, distinct scores


def test_truncated_steps_inherit_the_last_score(tokenizer, tiny_lm):
    prm = PlusMinusPRM(tiny_lm, tokenizer, style="math-shepherd", device="cpu")
    full = prm.score([LONG_PROBLEM], [LONG_STEPS])[0]
    prm.max_length = prm.encode(LONG_PROBLEM, LONG_STEPS).positions[1] + 1  # room for two steps
    cut = prm.score([LONG_PROBLEM], [LONG_STEPS])[0]
    assert len(cut) == 4 and cut[:2] == pytest.approx(full[:2], abs=1e-5) and cut[2:] == [cut[1], cut[1]]


# -- load_prm dispatch --------------------------------------------------------------------------------
def test_load_prm_dispatches_local_dirs(tmp_path, tiny_model_dir, tiny_qwen_dir):
    pm = tmp_path / "rlhflow-like"
    shutil.copytree(tiny_model_dir, pm)
    (pm / "synth_prm.json").write_text(json.dumps({"format": "plus-minus", "style": "rlhflow"}))
    prm = load_prm(str(pm), device="cpu")
    assert isinstance(prm, PlusMinusPRM) and prm.style == "rlhflow"
    assert len(prm.score([PROBLEM], [STEPS])[0]) == 2
    assert isinstance(load_prm(str(tiny_qwen_dir), device="cpu"), QwenMathPRM)
    (pm / "synth_prm.json").write_text(json.dumps({"format": "plus-minus"}))  # no style
    with pytest.raises(PRMError, match="style"):
        load_prm(str(pm))


@pytest.mark.parametrize(
    "hub_id, cls, style",
    [
        ("peiyi9979/math-shepherd-mistral-7b-prm", PlusMinusPRM, "math-shepherd"),
        ("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", PlusMinusPRM, "rlhflow"),
        ("RLHFlow/Llama3.1-8B-PRM-Mistral-Data", PlusMinusPRM, "rlhflow"),
        ("Qwen/Qwen2.5-Math-PRM-7B", QwenMathPRM, None),
        ("Qwen/Qwen2.5-Math-PRM-72B", QwenMathPRM, None),
    ],
)
def test_load_prm_recognises_hub_ids(monkeypatch, hub_id, cls, style):
    calls = []
    monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, path, **kw: calls.append((path, kw)) or "loaded"))
    assert load_prm(hub_id) == "loaded"
    path, kw = calls[0]
    assert path == hub_id and kw.get("style") == style


def test_load_prm_unknown_spec_names_it(monkeypatch):
    import synth.prm.load as load

    monkeypatch.setattr(load, "_hub_snapshot_with_meta", lambda spec: None)  # offline: nothing on the Hub
    with pytest.raises(PRMError, match="some-org/some-prm"):
        load_prm("some-org/some-prm")
    with pytest.raises(PRMError, match="no-such-prm"):
        load_prm("no-such-prm")


def test_prm_dtype_resolution(monkeypatch):
    import synth.models as d

    assert d.resolve_dtype("float32", "cpu") == torch.float32 and d.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    monkeypatch.setattr(d, "cpu_has_native_bf16", lambda: True)
    assert d.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(d, "cpu_has_native_bf16", lambda: False)
    assert d.resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="int8"):
        d.resolve_dtype("int8", "cpu")


def test_token_classification_prm_scores_in_bf16_close_to_fp32(tiny_model_dir, tokenizer):
    from transformers import AutoModelForTokenClassification

    from synth.prm.token_cls import TokenClassificationPRM

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    fp32 = TokenClassificationPRM(copy.deepcopy(model), tokenizer, device="cpu", dtype="float32")
    bf16 = TokenClassificationPRM(model, tokenizer, device="cpu", dtype="bfloat16")
    assert (
        next(bf16.model.parameters()).dtype == torch.bfloat16 and next(fp32.model.parameters()).dtype == torch.float32
    )
    a, b = (
        fp32.score([PROBLEM, LONG_PROBLEM], [STEPS, LONG_STEPS]),
        bf16.score([PROBLEM, LONG_PROBLEM], [STEPS, LONG_STEPS]),
    )
    assert [len(x) for x in a] == [len(x) for x in b] == [2, len(LONG_STEPS)]
    assert max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)) < 0.05


def test_group_by_prefix_groups_siblings_and_keeps_strangers_apart():
    from synth.prm.prefix import group_by_prefix

    parent_a, parent_b = list(range(100, 130)), list(range(100, 112)) + list(range(200, 218))
    seqs = [
        parent_a + [1, 2],
        parent_b + [3],
        parent_a + [4],
        parent_b + [5, 6],
        parent_a + [7, 8, 9],
        [9] * 20,
        list(range(100, 105)),
    ]
    groups = {tuple(sorted(g.members)): g.prefix_len for g in group_by_prefix(seqs, min_shared=8)}
    # the two parents share only 12 tokens: grouping all five would save less than two groups do
    assert groups == {(0, 2, 4): 30, (1, 3): 30, (5,): 20, (6,): 5}


def test_shared_prefix_scoring_matches_one_sequence_per_row(tiny_model_dir, tokenizer):
    """Beam-search-like candidates (siblings share their parent's path): every step score equals the
    score of that sequence run alone through the model, and shared prefixes are really shared."""
    from transformers import AutoModelForTokenClassification

    from synth.prm.format import encode_steps
    from synth.prm.token_cls import TokenClassificationPRM

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    prm = TokenClassificationPRM(model, tokenizer, device="cpu", dtype="float32", batch_size=4)
    problems, steps = [], []
    for k in range(3):  # three parents of LONG_PROBLEM, each with siblings of different lengths
        for child in ["Done.", f"So the answer is {20 + k}.", "Let me check this again: " + "4 * 6 = 24, " * (k + 1)]:
            problems.append(LONG_PROBLEM)
            steps.append(LONG_STEPS[: k + 1] + [child])
    problems += [PROBLEM, PROBLEM]
    steps += [STEPS, STEPS[:1]]  # one sequence is a prefix of another
    calls = []
    forward = prm.model.forward
    prm.model.forward = lambda **kw: calls.append(kw["input_ids"].numel()) or forward(**kw)
    shared = prm.score(problems, steps)
    shared_slots, calls[:] = sum(calls), []
    prm.share_prefixes = False
    unshared = prm.score(problems, steps)
    assert shared_slots < 0.75 * sum(calls)
    with torch.inference_mode():
        for p, s, got, got_unshared in zip(problems, steps, shared, unshared):
            e = encode_steps(tokenizer, p, s)
            logits = forward(input_ids=torch.tensor([e.input_ids])).logits[0, :, 0]
            want = torch.sigmoid(logits[e.label_positions]).tolist()
            assert got == pytest.approx(want, abs=1e-5) and got_unshared == pytest.approx(want, abs=1e-5)


def test_scoring_children_reuses_the_kv_of_parents_scored_last_call(tiny_model_dir, tokenizer):
    """Tree search scores a node, then its children: the second call runs only the children's new tokens
    on the kept KV of their parents, and every step score still equals that sequence run alone."""
    from transformers import AutoModelForTokenClassification

    from synth.prm.format import encode_steps
    from synth.prm.token_cls import TokenClassificationPRM

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    prm = TokenClassificationPRM(model, tokenizer, device="cpu", dtype="float32", batch_size=3)
    parents = [LONG_STEPS[: k + 1] for k in range(3)] + [STEPS[:1]]
    children = [p + [child] for p in parents for child in ("Done.", f"So it is {len(p) * 7}.")]
    children.append(["An unrelated first step that no parent starts with, long enough to be its own prefix."])
    problem_of = lambda s: PROBLEM if s[0] == STEPS[0] else LONG_PROBLEM  # noqa: E731
    calls = []
    forward = prm.model.forward
    prm.model.forward = lambda **kw: calls.append(kw["input_ids"].numel()) or forward(**kw)
    prm.score([problem_of(s) for s in parents], parents)
    calls[:] = []
    got = prm.score([problem_of(s) for s in children], children)
    reused_slots, calls[:] = sum(calls), []
    fresh = TokenClassificationPRM(model, tokenizer, device="cpu", dtype="float32", batch_size=3)
    fresh.model.forward = prm.model.forward
    fresh.score([problem_of(s) for s in children], children)
    assert reused_slots < 0.5 * sum(calls), (reused_slots, sum(calls))
    with torch.inference_mode():
        for s, scores in zip(children, got):
            e = encode_steps(tokenizer, problem_of(s), s)
            logits = forward(input_ids=torch.tensor([e.input_ids])).logits[0, :, 0]
            assert scores == pytest.approx(torch.sigmoid(logits[e.label_positions]).tolist(), abs=1e-5)


def test_similar_lengths_caps_a_pass_at_max_rows():
    from synth.prm.token_cls import _similar_lengths

    assert _similar_lengths([10] * 9, max_rows=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    # a long tail gets its own pass: padding 4 rows to 40 tokens would be 4x their tokens
    assert _similar_lengths([5, 5, 5, 5, 6, 40, 41, 42, 43]) == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]


def test_children_on_kept_kv_run_in_passes_of_similar_length(tiny_model_dir, tokenizer):
    """Children of short and long new steps: passes grouped by new length feed fewer (padded) tokens than
    passes of `batch_size` in length order, and score every step the same."""
    from transformers import AutoModelForTokenClassification

    from synth.prm.token_cls import TokenClassificationPRM

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    parents = [LONG_STEPS[: k + 1] for k in range(3)]
    tails = ["Done.", "Yes.", "So.", "Ok.", "Then " + "we add one more apple to the pile, " * 4 + "and stop."]
    children = [p + [t] for p in parents for t in tails]
    fed, scores = {}, {}
    for by_length in (True, False):
        prm = TokenClassificationPRM(model, tokenizer, device="cpu", dtype="float32", batch_size=8)
        prm.chunks_by_length = by_length
        prm.score([LONG_PROBLEM] * len(parents), parents)
        calls, forward = [], prm.model.forward
        prm.model.forward = lambda c=calls, f=forward, **kw: c.append(kw["input_ids"].numel()) or f(**kw)
        scores[by_length] = prm.score([LONG_PROBLEM] * len(children), children)
        prm.model.forward = forward
        fed[by_length] = sum(calls)
    assert fed[True] < 0.7 * fed[False], fed
    for a, b in zip(scores[True], scores[False]):
        assert a == pytest.approx(b, abs=1e-5)
