"""Where the batches of a run are worked on: in this process, or on a pool of Ray actors.

A run hands over a `setup` function (builds what a worker needs once: the policy engine, the PRM) and a
`work` function (one batch -> its result). Locally both run here. With `launcher: ray`, each of
`ray.num_workers` actors calls `setup` once and then takes whole batches from a `ray.util.ActorPool`
(which submits a batch only to an idle actor: back pressure), while the driver receives results as they
finish and writes them: layout, journal, resume and card stay those of a local run. Ray does the
placement (CPUs, GPUs: each actor gets its own `CUDA_VISIBLE_DEVICES`) and the retries: an actor that dies
is restarted (`max_restarts`) and its batch submitted again (`max_task_retries`); a small counter actor
records each batch's attempts, so the run can say how many batches were retried.

Results never depend on where a batch ran: a batch's sampling seed comes from the run seed and its
problems, and every search starts from a clean engine cache (`Policy.new_search`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from synth.config import ConfigError, check_fields

log = logging.getLogger(__name__)

Launcher = Literal["local", "ray"]


class WorkerError(RuntimeError):
    """A Ray worker that died more often than it may be restarted; the message says how to continue."""


RAY_VERSION = "2.60.0"  # the version synth is tested with (`pip install synth[ray]`)


@dataclass
class RayConfig:
    """The Ray actor pool of `launcher: ray`."""

    address: str = field(
        default="local",
        metadata={
            "help": (
                "Ray cluster: 'local' (start one on this machine), 'auto' (join the running cluster), or ray://host:port."
            )
        },
    )
    num_workers: int = field(
        default=1, metadata={"range": "[1, inf)", "help": "Actors, each with its own policy engine and PRM."}
    )
    cpus_per_worker: float = field(
        default=1.0, metadata={"range": "(0, inf)", "help": "CPUs per actor (its torch threads)."}
    )
    gpus_per_worker: float = field(
        default=0.0,
        metadata={
            "range": "[0, inf)",
            "help": (
                "GPUs per actor (Ray sets its CUDA_VISIBLE_DEVICES). With vLLM tensor parallelism the actor takes none itself: "
                "its engine's workers get vllm.tensor_parallel_size GPUs from a placement group."
            ),
        },
    )
    max_retries: int = field(
        default=3,
        metadata={
            "range": "[0, inf)",
            "help": ("Times a dead actor is restarted and its batch retried before the run stops (resumable)."),
        },
    )

    def __post_init__(self):
        check_fields(self)


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run_batches(
    launcher: Launcher,
    ray_cfg: RayConfig,
    setup: Callable[..., Any],
    setup_args: tuple,
    work: Callable[[Any, Any], Any],
    batches: list[Any],
    tensor_parallel: int = 1,
    stats: dict[str, int] | None = None,
    in_flight: int = 1,
    stop: threading.Event | None = None,
    wait: Callable[[Future], Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(batch index, work(state, batch)) for every batch, as each finishes (any order under Ray).
    `stats` receives `retried_batches`. `setup` and `work` must be importable module-level functions.
    Local: `in_flight` batches at once in threads (their engines must be shared: synth.generate.overlap),
    yielded in order (`wait` waits for each: it may run the engines' calls meanwhile); `stop` is set when the
    run ends early."""
    stats = stats if stats is not None else {}
    stats.setdefault("retried_batches", 0)
    if launcher == "local":
        state = setup(*setup_args)
        yield from in_order(lambda batch: work(state, batch), batches, in_flight, stop, wait)
        return
    yield from _ray_batches(ray_cfg, setup, setup_args, work, batches, tensor_parallel, stats)


def in_order(
    work: Callable[[Any], Any],
    items: list[Any],
    width: int,
    stop: threading.Event | None = None,
    wait: Callable[[Future], Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(index, work(item)) for every item, `width` at a time in threads, yielded in the items' order (so
    results are written as the sequential run writes them); at most `width` run ahead of the last yielded.
    Leaving early (an interrupt, a failed item) sets `stop`, which the shared engines check before each call,
    so the items still running end within one engine call (synth.generate.overlap)."""
    if width <= 1:
        for index, item in enumerate(items):
            yield index, work(item)
        return
    wait = wait or Future.result
    pool = ThreadPoolExecutor(width, thread_name_prefix="synth-search")
    pending: deque = deque()
    try:
        for index, item in enumerate(items):
            pending.append((index, pool.submit(work, item)))
            if len(pending) >= width:
                i, future = pending.popleft()
                yield i, wait(future)
        while pending:
            i, future = pending.popleft()
            yield i, wait(future)
    finally:
        if stop is not None:
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def worker_options(
    ray_cfg: RayConfig, tensor_parallel: int = 1
) -> tuple[dict[str, Any], list[dict[str, float]] | None]:
    """The `.options()` of one worker actor, and the placement-group bundles it needs (vLLM with tensor
    parallelism: one GPU per shard of the model, packed on one node; the actor itself takes no GPU)."""
    options: dict[str, Any] = {
        "num_cpus": ray_cfg.cpus_per_worker,
        "max_restarts": ray_cfg.max_retries,
        "max_task_retries": ray_cfg.max_retries,
    }
    if tensor_parallel > 1:
        options["num_gpus"] = 0
        bundles = [{"CPU": ray_cfg.cpus_per_worker}] + [{"GPU": 1.0, "CPU": 1.0} for _ in range(tensor_parallel)]
        return options, bundles
    options["num_gpus"] = ray_cfg.gpus_per_worker
    return options, None


def _ray_batches(ray_cfg, setup, setup_args, work, batches, tensor_parallel, stats) -> Iterator[tuple[int, Any]]:
    if not ray_available():
        raise ConfigError(f"launcher: ray needs Ray: pip install 'synth[ray]' (ray=={RAY_VERSION})")
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, ray_cfg)
    workers, groups = [], []
    try:
        counter = _Attempts.options(num_cpus=0).remote()
        options, bundles = worker_options(ray_cfg, tensor_parallel)
        for _ in range(ray_cfg.num_workers):
            opts = dict(options)
            if bundles:
                from ray.util.placement_group import placement_group
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                group = placement_group(bundles, strategy="STRICT_PACK")
                ray.get(group.ready())
                groups.append(group)
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_capture_child_tasks=True
                )
            workers.append(_Worker.options(**opts).remote(setup, setup_args, counter))
        pool = ActorPool(workers)
        for index, batch in enumerate(batches):
            pool.submit(lambda actor, item: actor.run.remote(work, *item), (index, batch))
        while pool.has_next():
            try:
                index, result, attempt = pool.get_next_unordered()
            except RayTaskError as err:  # the work itself raised: the same error as a local run would
                raise (err.cause if isinstance(getattr(err, "cause", None), BaseException) else err) from None
            except RayActorError as err:
                raise WorkerError(
                    f"a Ray worker failed past its {ray_cfg.max_retries} retries "
                    f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); the batches that finished "
                    "are saved: rerun with --resume true"
                ) from None
            stats["retried_batches"] += attempt > 1
            yield index, result
    finally:
        for w in workers:
            ray.kill(w)
        for g in groups:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(g)
        if started_here:
            ray.shutdown()


def _init(ray, cfg: RayConfig) -> None:
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cfg.address == "local":  # a new cluster on this machine, never another driver's
        kw["address"] = "local"
        kw["num_cpus"] = max(int(cfg.cpus_per_worker * cfg.num_workers + 0.999), os.cpu_count() or 1)
    else:
        kw["address"] = cfg.address
    ray.init(**kw)


@lru_cache(maxsize=1)
def _define_actors():
    import ray

    @ray.remote
    class Worker:
        """Builds its engine once (`setup`), then works batch after batch."""

        __qualname__ = "Worker"  # what Ray's logs and process titles show

        def __init__(self, setup, setup_args, counter):
            threads = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
            import torch

            torch.set_num_threads(max(threads, 1))
            self.state, self.counter = setup(*setup_args), counter

        def run(self, work, index, batch):
            attempt = ray.get(self.counter.start.remote(index))
            return index, work(self.state, batch), attempt

        def pid(self) -> int:
            return os.getpid()

    @ray.remote
    class Attempts:
        """How many times each batch was started (a retry after a worker died starts it again)."""

        __qualname__ = "Attempts"

        def __init__(self):
            self.counts: dict[int, int] = {}

        def start(self, index: int) -> int:
            self.counts[index] = self.counts.get(index, 0) + 1
            return self.counts[index]

    return Worker, Attempts


class _Lazy:
    """Ray actor classes, defined on first use so that importing synth does not import Ray."""

    def __init__(self, which: int):
        self.which, self.cls = which, None

    def options(self, **kw):
        if self.cls is None:
            self.cls = _define_actors()[self.which]
        return self.cls.options(**kw)


_Worker, _Attempts = _Lazy(0), _Lazy(1)
