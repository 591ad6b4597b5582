"""Resumable pipeline stages (a `done.json` marker per finished stage) and a one-slot model cache."""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "done.json"


def read_marker(stage_dir: Path) -> dict[str, Any] | None:
    path = Path(stage_dir) / MARKER
    return json.loads(path.read_text()) if path.exists() else None


def run_stage(stage_dir: Path, fn: Callable[[Path], dict[str, Any]], label: str = "") -> dict[str, Any]:
    """Run `fn(stage_dir)` unless the stage already finished; returns its result either way.

    The marker is written (atomically) only after `fn` returns, so an interrupted stage runs again
    on the next call and picks up whatever it saved itself (journals, checkpoints).
    """
    stage_dir = Path(stage_dir)
    done = read_marker(stage_dir)
    if done is not None:
        log.info("%s: done already (%.1fs), skipped", label or stage_dir, done["wall_s"])
        return done["result"]
    stage_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = fn(stage_dir)
    wall = round(time.perf_counter() - started, 1)
    marker = {
        "stage": stage_dir.name,
        "result": result,
        "wall_s": wall,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = stage_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2, default=str))
    os.replace(tmp, stage_dir / MARKER)
    log.info("%s: finished in %.1fs", label or stage_dir, wall)
    return result


@contextmanager
def private_datasets_cache():
    """A throwaway `datasets` cache while stages that `load_dataset` a local synth dir run.

    `load_dataset(dir)` caches a synth dataset dir under its base name and the card's (relative)
    data_files only, so every round's `generate/` or `label/` dir would read back the first one's
    cached rows. A fresh cache makes the load read the files.
    """
    import datasets

    previous = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory(prefix="synth-datasets-") as tmp:
        datasets.config.HF_DATASETS_CACHE = tmp
        try:
            yield
        finally:
            datasets.config.HF_DATASETS_CACHE = previous


class ModelCache:
    """Keeps the last policy and the last PRM loaded, so consecutive stages on one model share it.

    `load_policy(path)` and `load_prm(spec)` build them; only one of each is held at a time.
    """

    def __init__(self, load_policy: Callable[[str], Any], load_prm: Callable[[str], Any]):
        self._load_policy, self._load_prm = load_policy, load_prm
        self._policy: tuple[str, Any] | None = None
        self._prm: tuple[str, Any] | None = None
        self.loads: list[str] = []  # what was loaded, in order (for logs and tests)

    def policy(self, path: str):
        if self._policy is None or self._policy[0] != path:
            self.release_policy()
            self.loads.append(f"policy:{path}")
            self._policy = (path, self._load_policy(path))
        return self._policy[1]

    def prm(self, spec: str | None):
        if spec is None:
            return None
        if self._prm is None or self._prm[0] != spec:
            self._prm = None
            self.loads.append(f"prm:{spec}")
            self._prm = (spec, self._load_prm(spec))
        return self._prm[1]

    def release_policy(self) -> None:
        """Free the policy (before training, which needs the memory)."""
        if self._policy is not None:
            self._policy = None
            from synth.generate.vllm import release_engines

            release_engines()  # a vLLM engine is cached per process: shut it down too
            gc.collect()
            _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
