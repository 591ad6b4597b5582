"""The vLLM engine: the Policy protocol on the real bundled SmolLM2, and the same dataset as transformers.

Tests marked `vllm` need vLLM (`make install-vllm`, then run them with .venv-vllm/bin/python, or
`scripts/vllm_smoke.sh`); elsewhere they are skipped. The unmarked ones check engine selection and
the output mapping without vLLM.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fakes import StepPRM

from synth.generate.engine import SamplingParams
from synth.generate.run import GenerateConfig, generate, resolve_engine
from synth.generate.search import SearchConfig
from synth.generate.vllm import VLLMConfig, _continuation, request_seed, vllm_available
from synth.problems import PoolConfig

SKIP_REASON = "vLLM is not installed in this environment (make install-vllm, then use .venv-vllm)"
POOL = PoolConfig(
    source="reasoning_gym",
    tasks=["basic_arithmetic"],
    num_problems=4,
    seed=11,
    task_config={"basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}},
)


# -- without vLLM -------------------------------------------------------------------------------------
def test_auto_engine_follows_vllm_availability(monkeypatch):
    import synth.generate.run as run

    monkeypatch.setattr(run, "vllm_available", lambda: False)
    assert resolve_engine("auto") == "transformers" and resolve_engine("transformers") == "transformers"
    with pytest.raises(ValueError, match="make install-vllm"):
        resolve_engine("vllm")
    monkeypatch.setattr(run, "vllm_available", lambda: True)
    assert resolve_engine("auto") == "vllm" and resolve_engine("transformers") == "transformers"


def test_vllm_options_parse_and_validate():
    from synth.config import ConfigError, from_dict

    cfg = from_dict(
        GenerateConfig,
        {
            "engine": "vllm",
            "vllm": {
                "gpu_memory_utilization": 0.5,
                "enforce_eager": "false",
                "enable_prefix_caching": "off",
                "max_model_len": 2048,
            },
        },
    )
    assert cfg.vllm == VLLMConfig(
        gpu_memory_utilization=0.5, enforce_eager=False, enable_prefix_caching=False, max_model_len=2048
    )
    assert GenerateConfig().vllm == VLLMConfig()  # defaults: resolved per platform when the engine starts
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        from_dict(GenerateConfig, {"vllm": {"gpu_memory_utilization": 1.5}})


def test_request_seeds_never_overlap():
    """vLLM seeds sample j of a request with seed+j: no two (prompt, sample) pairs of a call may share one."""
    for n in (1, 4, 64):
        seeds = [request_seed(7, i, n) + j for i in range(50) for j in range(n)]
        assert len(set(seeds)) == len(seeds)
    assert request_seed(7, 0, 4) != request_seed(8, 0, 4)


def test_completion_mapping():
    out = lambda reason, stop, n=5: SimpleNamespace(
        text="x", token_ids=list(range(n)), finish_reason=reason, stop_reason=stop
    )  # noqa: E731
    assert _continuation(out("stop", None), 9).stop_reason == "eos"  # the model's EOS
    assert _continuation(out("stop", 2), 9).stop_reason == "eos"  # another EOS id (stop token)
    c = _continuation(out("stop", "\n\n"), 9)
    assert (c.stop_reason, c.num_tokens, c.prompt_tokens, c.text) == ("stop", 5, 9, "x")
    assert _continuation(out("length", None), 9).stop_reason == "length"
    with pytest.raises(RuntimeError, match="abort"):
        _continuation(out("abort", None), 9)


def test_cpu_engine_never_splits_a_prefill(tmp_path, monkeypatch):
    """vLLM 0.32 on CPU crashes when a seeded request's prefill is chunked: whole prefills, budget = model length."""
    import synth.generate.vllm as v

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    monkeypatch.setattr(v, "_on_cpu", lambda: True)
    kw = v.engine_kwargs(str(tmp_path), VLLMConfig())
    assert kw["enable_chunked_prefill"] is False and kw["max_num_batched_tokens"] == kw["max_model_len"] == 8192
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    assert v.engine_kwargs(str(tmp_path), VLLMConfig())["max_num_batched_tokens"] == v.CPU_MAX_MODEL_LEN
    assert v.engine_kwargs(str(tmp_path), VLLMConfig(max_model_len=2048))["max_num_batched_tokens"] == 2048
    monkeypatch.setattr(v, "_on_cpu", lambda: False)
    assert "enable_chunked_prefill" not in v.engine_kwargs(str(tmp_path), VLLMConfig())


def test_tensor_parallel_engine_inside_a_ray_worker_uses_ray(tmp_path, monkeypatch):
    """A synth Ray worker with vllm.tensor_parallel_size > 1: vLLM places its shards with Ray (in the
    worker's placement group, see synth.launch.worker_options); outside Ray it picks its own backend."""
    import synth.generate.vllm as v

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    monkeypatch.setattr(v, "_on_cpu", lambda: False)
    monkeypatch.setattr(v, "in_ray_worker", lambda: True)
    kw = v.engine_kwargs(str(tmp_path), VLLMConfig(tensor_parallel_size=4))
    assert kw["tensor_parallel_size"] == 4 and kw["distributed_executor_backend"] == "ray"
    assert "distributed_executor_backend" not in v.engine_kwargs(str(tmp_path), VLLMConfig())
    monkeypatch.setattr(v, "in_ray_worker", lambda: False)
    assert "distributed_executor_backend" not in v.engine_kwargs(str(tmp_path), VLLMConfig(tensor_parallel_size=4))


# -- with vLLM, on the real bundled SmolLM2 -----------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_policy():
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from synth.generate.run import load_policy
    from synth.generate.vllm import VLLMPolicy

    # auto picks vLLM where it is installed; fp32: in bf16 a prefix-cached prompt can sample differently
    policy = load_policy(GenerateConfig(engine="auto", dtype="float32"))
    assert isinstance(policy, VLLMPolicy)
    yield policy
    from synth.generate.vllm import release_engines

    release_engines()


@pytest.fixture(scope="module")
def hf_policy():
    from synth.generate.hf import TransformersPolicy
    from synth.models import resolve_model

    return TransformersPolicy(resolve_model("smollm2-135m"), batch_size=64, dtype="float32")


@pytest.mark.vllm
def test_vllm_policy_protocol(vllm_policy, hf_policy):
    assert vllm_available()
    problem = "What is 3 + 4?"
    prompt = vllm_policy.chat_prompt(problem)
    assert prompt == hf_policy.chat_prompt(problem)  # same chat template, same system prompt
    prompt_len = len(hf_policy.tokenizer(prompt, add_special_tokens=False).input_ids)
    params = SamplingParams(n=4, max_tokens=24, temperature=0.8, seed=3)
    a = vllm_policy.generate([prompt, prompt], params)
    b = vllm_policy.generate([prompt, prompt], params)
    assert [len(x) for x in a] == [4, 4]
    assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]  # per-request seeds
    assert [c.text for c in a[0]] != [c.text for c in a[1]]  # the same prompt twice: different samples
    for c in a[0] + a[1]:
        assert c.stop_reason in ("eos", "length") and 1 <= c.num_tokens <= 24 and c.prompt_tokens == prompt_len
        assert c.stop_reason != "length" or c.num_tokens == 24
    other = vllm_policy.generate([prompt], SamplingParams(n=4, max_tokens=24, temperature=0.8, seed=4))
    assert [c.text for c in other[0]] != [c.text for c in a[0]]

    greedy = SamplingParams(n=1, max_tokens=40, temperature=0)
    free = vllm_policy.generate([prompt], greedy)[0][0]
    assert free.text.strip()
    # both engines decode the same greedy text (fp32): catches a transformers engine decoding without
    # its KV cache (transformers < 5.20 ignores the `cache=` kwarg: make install-vllm reinstalls it)
    hf_free = hf_policy.generate([prompt], greedy)[0][0]
    assert free.text[:24] == hf_free.text[:24], (free, hf_free)
    stop = " " if " " in free.text.strip() else free.text[1:2]
    cut = vllm_policy.generate([prompt], SamplingParams(n=1, max_tokens=40, temperature=0, stop=[stop]))[0][0]
    assert cut.stop_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)
    assert cut.num_tokens <= free.num_tokens
    kept = vllm_policy.generate(
        [prompt], SamplingParams(n=1, max_tokens=40, temperature=0, stop=[stop], include_stop=True)
    )[0][0]
    assert (
        kept.text == cut.text + stop
    )  # the stop string kept, the rest of its token dropped (as the transformers engine)
    assert vllm_policy.generate([], params) == []


@pytest.mark.vllm
def test_vllm_many_seeded_requests(vllm_policy):
    """More prompt tokens than one step holds: vLLM 0.32's CPU worker crashed on chunked seeded prefills."""
    prompts = [vllm_policy.chat_prompt(f"What is {i} + {i + 7}? " + "Think step by step. " * 20) for i in range(48)]
    outs = vllm_policy.generate(prompts, SamplingParams(n=8, max_tokens=2, temperature=0.8, seed=1))
    assert len(outs) == 48 and all(len(o) == 8 and all(1 <= c.num_tokens <= 2 for c in o) for o in outs)


def _run(tmp_path, name, policy, strategy, prm=None):
    search = SearchConfig(strategy=strategy, n=4, max_tokens=48, beam_width=2, max_iterations=2, step_max_tokens=32)
    cfg = GenerateConfig(output_dir=str(tmp_path / name), pool=POOL, search=search, problems_per_batch=4)
    summary = generate(cfg, policy=policy, prm=prm)
    from datasets import load_dataset

    # a cache of its own: datasets 5.2 caches a local dir by its *basename*, so another run's
    # "vllm" dir (the other strategy, an earlier session) would be served instead of this one
    return summary, load_dataset(cfg.output_dir, split="train", cache_dir=str(tmp_path / f"{name}-datasets-cache"))


def _same_schema(ds_a, ds_b):
    assert ds_a.column_names == ds_b.column_names
    for col in ds_a.column_names:  # types match wherever both runs hold values (an all-null column has no type)
        fa, fb = ds_a.features[col], ds_b.features[col]
        if "null" not in (repr(fa) + repr(fb)):
            assert fa == fb, (col, fa, fb)


@pytest.mark.vllm
@pytest.mark.parametrize("strategy", ["best_of_n", "dvts"])
def test_same_dataset_as_transformers(tmp_path, vllm_policy, hf_policy, strategy):
    prm = StepPRM() if strategy == "dvts" else None  # DVTS needs a PRM: a cheap fake one ranks the steps
    s_vllm, ds_vllm = _run(tmp_path, "vllm", vllm_policy, strategy, prm)
    s_hf, ds_hf = _run(tmp_path, "hf", hf_policy, strategy, prm)
    _same_schema(ds_vllm, ds_hf)
    assert sorted(s_vllm) == sorted(s_hf)  # the same summary metrics
    assert len(ds_vllm) == 4 and ds_vllm["id"] == ds_hf["id"]
    for row in ds_vllm:
        assert len(row["completions"]) == 4 and row["generated_tokens"] > 0 and row["prefill_tokens"] > 0
        assert any(c.strip() for c in row["completions"])  # the real model wrote text
    assert set(ds_vllm["strategy"]) == {strategy}
    if strategy == "dvts":
        for row in ds_vllm:
            assert row["prm_steps"] > 0 and json.loads(row["tree"]), row


# -- PRMs on vLLM's pooling runner ----------------------------------------------------------------------
def test_a_prm_vllm_cannot_score_falls_back_to_transformers(tmp_path, tiny_model_dir, monkeypatch, caplog):
    """A PRM that is no synth token-classification PRM: one line, then transformers scores it."""
    import synth.generate.vllm as v
    from synth.prm.load import load_prm
    from synth.prm.token_cls import TokenClassificationPRM
    from synth.prm.vllm_prm import VLLMPRMError, export_for_vllm

    monkeypatch.setattr(v, "vllm_available", lambda: True)
    (tmp_path / "synth_prm.json").write_text(json.dumps({"format": "plus-minus"}))
    with pytest.raises(VLLMPRMError, match="token-classification PRMs only"):
        export_for_vllm(str(tmp_path))
    monkeypatch.setattr(
        "synth.prm.vllm_prm.export_for_vllm", lambda spec: (_ for _ in ()).throw(VLLMPRMError("no way"))
    )
    with caplog.at_level("WARNING"):
        prm = load_prm("default", engine="vllm", dtype="float32")
    assert (
        isinstance(prm, TokenClassificationPRM)
        and "prm_engine vllm: no way; the PRM scores with transformers" in caplog.text
    )


def test_bundled_prm_on_vllm_agrees_with_transformers():
    pytest.importorskip("vllm", reason=SKIP_REASON)
    from synth.prm.load import load_prm
    from synth.prm.vllm_prm import VLLMPRM

    problems = ["What is 3 + 5?", "Compute 12 - 7.", "What is 2 + 2?"]
    steps = [
        ["We add 3 and 5.", "3 + 5 = 8.", "The answer is \\boxed{8}."],
        ["12 - 7 = 5.", "So \\boxed{5}."],
        ["2 + 2 = 5.", "So the answer is \\boxed{5}."],
    ]
    expected = load_prm("default", dtype="float32").score(problems, steps)
    got = VLLMPRM("default", dtype="float32").score(problems, steps)
    diff = max(abs(a - b) for ra, rb in zip(expected, got) for a, b in zip(ra, rb))
    print(f"PRM on vLLM vs transformers, fp32: max abs difference {diff:.2e}")
    assert [len(r) for r in got] == [3, 2, 2] and diff <= 0.02
