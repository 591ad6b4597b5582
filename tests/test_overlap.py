"""Batches searched side by side (`overlap`): the rows equal the sequential run's, the engines never see two
calls at once, served engines overlap while local ones run on the main thread in turns, and an interrupt
stops every batch."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from synth.generate.overlap import Busy, Cancelled, SharedPolicy, SharedPRM, shared_engines
from synth.generate.run import GenerateConfig, generate
from synth.generate.search import SearchConfig
from synth.journal import Journal
from synth.launch import in_order
from synth.problems import PoolConfig


@pytest.fixture(scope="module")
def tiny_prm(tiny_model_dir, tokenizer):
    from transformers import AutoModelForTokenClassification

    from synth.prm.token_cls import TokenClassificationPRM

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
    return TokenClassificationPRM(model, tokenizer, step_separator="\n", device="cpu", dtype="float32")


def run(tmp_path, name, policy, prm, overlap, strategy="dvts"):
    cfg = GenerateConfig(
        output_dir=str(tmp_path / name),
        prm="tiny",
        overlap=overlap,
        problems_per_batch=2,
        pool=PoolConfig(num_problems=6, seed=3),
        search=SearchConfig(
            strategy=strategy,
            n=4,
            beam_width=2,
            max_iterations=3,
            step_max_tokens=8,
            max_tokens=24,
            step_cut="sentence",
        ),
    )
    summary = generate(cfg, policy=policy, prm=prm)
    return Journal(tmp_path / name / "rows.jsonl").read(), summary


@pytest.mark.parametrize("strategy", ["dvts", "beam_search"])
def test_overlapping_batches_write_the_sequential_rows(tmp_path, tiny_policy, tiny_prm, strategy):
    alone, summary = run(tmp_path, "one", tiny_policy, tiny_prm, 1, strategy)
    side_by_side, summary2 = run(tmp_path, "two", tiny_policy, tiny_prm, 2, strategy)
    assert [r["id"] for r in alone] == [r["id"] for r in side_by_side]  # written in the batches' order
    assert json.dumps(alone, sort_keys=True) == json.dumps(side_by_side, sort_keys=True)
    assert summary["policy_s"] > 0 and "prm_s" in summary and "prm_s" in summary2  # timed (prm_s may round to 0)


class Engine:
    """A policy and PRM in one: each call runs `call(name)`."""

    def __init__(self, name, call):
        self.name, self.call = name, call

    def generate(self, prompts, params):
        self.call(self.name)
        return [[] for _ in prompts]

    def score(self, problems, steps):
        self.call(self.name)
        return [[0.5] for _ in problems]


def three_steps(policy, prm):
    """A search of a batch: three policy calls, each followed by a PRM call."""

    def search(batch):
        for _ in range(3):
            policy.generate([batch], None)
            prm.score([batch], [["x"]])
        return batch

    return search


def test_engines_take_turns_but_policy_and_prm_overlap():
    log, lock, running = [], threading.Lock(), {"policy": 0, "prm": 0}

    def call(name):
        with lock:
            running[name] += 1
            assert running[name] == 1, f"two {name} calls at once"
            log.append((name, "start", time.perf_counter()))
        time.sleep(0.05)
        with lock:
            log.append((name, "end", time.perf_counter()))
            running[name] -= 1

    stop = threading.Event()
    policy, prm = SharedPolicy(Engine("policy", call), stop), SharedPRM(Engine("prm", call), stop)
    started = time.perf_counter()
    assert [r for _, r in in_order(three_steps(policy, prm), list("abcd"), 2, stop)] == list("abcd")
    wall = time.perf_counter() - started
    # 12 policy and 12 PRM calls of 50 ms: 1.2 s in a row, ~0.65 s when the two engines overlap
    assert wall < 1.0 and policy.busy.calls == prm.busy.calls == 12
    spans = {name: [] for name in ("policy", "prm")}
    opened = {}
    for name, what, t in log:
        if what == "start":
            opened[name] = t
        else:
            spans[name].append((opened[name], t))
    assert any(a0 < b1 and b0 < a1 for a0, a1 in spans["policy"] for b0, b1 in spans["prm"])


def test_local_engines_run_every_call_on_the_main_thread_one_at_a_time():
    """Engines with a torch device: the searches' threads hand their calls to the main thread (torch is
    slower in other threads), which runs them while it waits; a policy and a PRM never run at once."""
    calls, running = [], []

    def call(name):
        running.append(name)
        assert len(running) == 1, running
        calls.append((name, threading.get_ident()))
        time.sleep(0.01)
        running.pop()

    class Local(Engine):
        device = "cpu"

    stop = threading.Event()
    shared = shared_engines(Local("policy", call), Local("prm", call), stop)
    policy, prm = shared.policy, shared.prm
    search = three_steps(policy, prm)
    assert [r for _, r in in_order(search, list("abcd"), 2, stop, shared.serve_until)] == list("abcd")
    assert len(calls) == 24 and {t for _, t in calls} == {threading.main_thread().ident}
    assert policy.busy.calls == prm.busy.calls == 12


def test_a_failed_batch_stops_the_others_at_their_next_call():
    stop = threading.Event()
    busy = Busy(stop)
    calls = []

    def work(item):
        if item == 0:
            time.sleep(0.05)
            raise ValueError("batch 0 failed")
        for _ in range(100):
            busy.run(lambda: calls.append(item) or time.sleep(0.01))
        return item

    with pytest.raises(ValueError, match="batch 0 failed"):
        list(in_order(work, [0, 1], 2, stop))
    assert stop.is_set() and len(calls) < 50  # batch 1 ended at its next call, not after its 100
    with pytest.raises(Cancelled):
        busy.run(lambda: None)


def test_overlap_is_for_the_local_launcher():
    with pytest.raises(ValueError, match="launcher local"):
        GenerateConfig(overlap=2, launcher="ray")
