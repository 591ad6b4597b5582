"""Engines shared by searches that run side by side in one process, and the time each engine is busy.

With `overlap: 2` two problem batches are searched at once, in threads: while one batch's search waits
for a served policy (vLLM, OpenAI-compatible) to sample, the other's steps are scored by the PRM. Each
engine serves one call at a time. Local engines (transformers, on a CPU or GPU) run every call on the main
thread, the policy's and the PRM's one after another (`Worker`): torch runs another thread's ops at about
one core's speed once the main thread has used its thread pool, and two engines busy at once on the same
cores only slow each other down. The HF policy keeps one KV stash per thread, so each search extends its
own last call as it would alone: the rows are those of `overlap: 1`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from synth.generate.kv_stash import calling_for


class Cancelled(RuntimeError):
    """The run stopped (interrupted, or another batch failed): searches still running end at their next call."""


class Worker:
    """Runs engine calls on the thread that made it (the main thread), in order: torch runs another thread's
    ops at about one core's speed once the main thread has used its thread pool (bench/overlap.py), so
    searches in threads hand their calls to the main thread, which runs them while it waits for the
    searches (`serve_until`). A call from the main thread itself runs at once."""

    def __init__(self) -> None:
        self.home = threading.get_ident()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

    def run(self, fn: Callable, *args, stop: threading.Event | None = None) -> Any:
        """fn(*args) on the main thread; its result, or its exception raised here. Cancelled when `stop` is
        set before the main thread took the call."""
        if threading.get_ident() == self.home:
            return fn(*args)
        call = _Call(fn, args)
        self._calls.put(call)
        while not call.done.wait(0.05):
            if stop is not None and stop.is_set() and call.abandon():
                raise Cancelled("the run stopped")
        if call.error is not None:
            raise call.error
        return call.value

    def serve_until(self, future: Future) -> Any:
        """Run the calls handed in until `future` is done; its result."""
        future.add_done_callback(lambda _: self._calls.put(None))  # wakes the loop
        while not future.done():
            call = self._calls.get()
            if call is not None:
                call.run()
        return future.result()


class _Call:
    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args, self.value, self.error = fn, args, None, None
        self.caller = threading.get_ident()
        self.done, self._lock, self._state = threading.Event(), threading.Lock(), "queued"

    def abandon(self) -> bool:
        """Withdraw the call unless it started."""
        with self._lock:
            if self._state == "queued":
                self._state = "abandoned"
            return self._state == "abandoned"

    def run(self) -> None:
        with self._lock:
            if self._state != "queued":
                return
            self._state = "started"
        try:
            with calling_for(self.caller):  # the caller's KV stashes
                self.value = self.fn(*self.args)
        except BaseException as e:  # handed to the caller
            self.error = e
        self.done.set()


class Busy:
    """Seconds an engine spent in its calls, summed (`busy_s`), and the calls, one at a time: run by `worker`
    (a local engine) or in the caller's thread under a lock (an engine behind a server); no call starts once
    `stop` is set."""

    def __init__(self, stop: threading.Event | None = None, worker: Worker | None = None) -> None:
        self.busy_s, self.calls = 0.0, 0
        self.stop = stop or threading.Event()
        self.worker, self._lock = worker, threading.Lock()

    def run(self, fn: Callable, *args) -> Any:
        if self.stop.is_set():
            raise Cancelled("the run stopped")
        if self.worker is not None:
            return self.worker.run(self._timed, fn, args, stop=self.stop)
        with self._lock:
            return self._timed(fn, args)

    def _timed(self, fn: Callable, args: tuple) -> Any:
        if self.stop.is_set():
            raise Cancelled("the run stopped")
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy_s += time.perf_counter() - started
            self.calls += 1


class SharedPolicy:
    """A policy that threads share: `generate` calls take turns and are timed; the rest passes through."""

    def __init__(self, policy: Any, stop: threading.Event | None = None, worker: Worker | None = None):
        self.engine, self.busy = policy, Busy(stop, worker)

    def generate(self, prompts, params):
        return self.busy.run(self.engine.generate, prompts, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


class SharedPRM:
    """A PRM that threads share: `score` calls take turns and are timed; the rest passes through."""

    def __init__(self, prm: Any, stop: threading.Event | None = None, worker: Worker | None = None):
        self.engine, self.busy = prm, Busy(stop, worker)

    def score(self, problems, steps):
        return self.busy.run(self.engine.score, problems, steps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


@dataclass
class SharedEngines:
    """A run's engines, shared by the searches in its threads, and the `Worker` that runs the local ones'
    calls: the thread that made them waits for the searches with `serve_until`."""

    policy: SharedPolicy
    prm: SharedPRM | None
    worker: Worker
    stop: threading.Event

    def serve_until(self, future: Future) -> Any:
        """Wait for `future` (a thread's search), running the local engines' calls meanwhile."""
        return self.worker.serve_until(future)


def shared_engines(policy: Any, prm: Any, stop: threading.Event) -> SharedEngines:
    """The run's engines, timed and safe for overlapping batches. Local ones (with a torch `device`) have
    their calls run by one `Worker` on this thread; an engine behind a server runs its calls in the
    searches' threads, beside the local one's."""
    worker = Worker()

    def local(engine: Any) -> Worker | None:
        return worker if getattr(engine, "device", None) is not None else None

    shared_prm = SharedPRM(prm, stop, local(prm)) if prm is not None else None
    return SharedEngines(SharedPolicy(policy, stop, local(policy)), shared_prm, worker, stop)
