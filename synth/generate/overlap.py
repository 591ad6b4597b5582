"""Engines shared by searches that run side by side in one process, and the time each engine is busy.

With `overlap: 2` two problem batches are searched at once, in threads: while one batch's search waits
for the policy to sample, the other's steps are scored by the PRM. Each engine serves one call at a time
(a lock), so neither sees concurrent calls; the HF policy keeps one KV stash per thread, so each search
extends its own last call as it would alone, and the rows are those of `overlap: 1` run on the same torch
threads per search (float results depend on the thread count).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Cancelled(RuntimeError):
    """The run stopped (interrupted, or another batch failed): searches still running end at their next call."""


class Busy:
    """Seconds an engine spent in its calls, summed (`busy_s`), and the calls; no call starts once `stop`
    is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.busy_s, self.calls = 0.0, 0
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()

    @contextmanager
    def call(self):
        with self._lock:  # one call at a time
            if self.stop.is_set():
                raise Cancelled("the run stopped")
            started = time.perf_counter()
            try:
                yield
            finally:
                self.busy_s += time.perf_counter() - started
                self.calls += 1


class SharedPolicy:
    """A policy that threads share: `generate` calls take turns and are timed; the rest passes through."""

    def __init__(self, policy: Any, stop: threading.Event | None = None):
        self.engine, self.busy = policy, Busy(stop)

    def generate(self, prompts, params):
        with self.busy.call():
            return self.engine.generate(prompts, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class SharedPRM:
    """A PRM that threads share: `score` calls take turns and are timed; the rest passes through."""

    def __init__(self, prm: Any, stop: threading.Event | None = None):
        self.engine, self.busy = prm, Busy(stop)

    def score(self, problems, steps):
        with self.busy.call():
            return self.engine.score(problems, steps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


@contextmanager
def torch_threads_split(width: int, device: str) -> Iterator[None]:
    """On a CPU, give each of `width` concurrent searches its share of torch's threads (two engines busy at
    once on all cores each would fight over them); restored afterwards."""
    if width <= 1 or device != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // width))
    try:
        yield
    finally:
        torch.set_num_threads(before)
