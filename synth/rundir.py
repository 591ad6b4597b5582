"""Output directories: synth writes only into directories it made, one process at a time.

A directory synth made holds `.synth-run.json`, naming the command that made it. Every command that
writes an output dir goes through a `RunDir`:

- `check()` is read-only. It accepts a missing or empty directory, and a directory the same command
  made; it refuses any other directory (one line naming it), a run dir of another command, and a
  continuation whose config differs from the one the run was started with (naming the keys).
- `claim()` comes after all other validation (pool, model, PRM, push target): it takes an exclusive
  lock (a second process on the same directory refuses), clears the directory on overwrite (only the
  entries the command writes; anything else in it makes `check()` refuse instead), and writes the
  marker and `config.yaml`. The lock is released when the `with` block ends or the process dies.

Modes: `journal` (generate, label, train, train-prm): an existing run needs `resume` (same config) or
`overwrite`; `rebuild` (filter, merge, eval): the same config rebuilds the output (a retry), another
config needs `overwrite`; `continue` (rounds): a rerun continues the run, with the same config.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from synth.config import ConfigError

log = logging.getLogger(__name__)

MARKER = ".synth-run.json"
LOCK = ".synth.lock"
ALWAYS_OURS = (MARKER, LOCK, "config.yaml", "config.yaml.tmp", "done.json", "done.json.tmp")
Mode = Literal["journal", "rebuild", "continue"]


class RunDirError(ConfigError):
    """An output dir synth must not write to as asked; the message names it and what to do."""


def flat_keys(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested mappings as dotted keys."""
    if not isinstance(data, dict) or not data:
        return {prefix.rstrip("."): data} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flat_keys(v, f"{prefix}{k}."))
    return out


def without(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a nested config without the dotted `keys`."""
    out = json.loads(json.dumps(data, default=str))
    for key in keys:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested configs."""
    a, b = flat_keys(old), flat_keys(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def describe_diff(old: dict[str, Any], new: dict[str, Any], keys: list[str], limit: int = 4) -> str:
    a, b = flat_keys(old), flat_keys(new)
    shown = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass
class RunDir:
    """One command's output dir. `config` is the comparable config (run-control keys removed);
    `saved_config` turns a saved config.yaml back into that form (fields added since take defaults)."""

    path: Path
    command: str
    config: dict[str, Any]
    config_yaml: str
    outputs: tuple[str, ...]  # glob patterns of the entries the command writes
    mode: Mode = "journal"
    resume: bool = False
    overwrite: bool = False
    saved_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    existing: bool = field(default=False, init=False)  # holds a run of this command
    _lock: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.path = Path(self.path).expanduser()

    @classmethod
    def for_config(
        cls,
        cfg,
        command: str,
        outputs: tuple[str, ...],
        run_control: tuple[str, ...] = (),
        mode: Mode = "journal",
        resume: bool = False,
        overwrite: bool = False,
        path: str | Path | None = None,
    ) -> RunDir:
        """The run dir of a config dataclass with an `output_dir`; `run_control` names the (dotted) keys
        that may change between a run and its continuation (flags, batch sizes, push options)."""
        from synth.config import dump_yaml, from_dict, to_dict

        def comparable(data: dict[str, Any]) -> dict[str, Any]:
            return without(data, run_control + ("output_dir", "resume", "overwrite"))

        return cls(
            Path(path if path is not None else cfg.output_dir),
            command,
            comparable(to_dict(cfg)),
            dump_yaml(cfg),
            outputs,
            mode,
            resume,
            overwrite,
            lambda data: comparable(to_dict(from_dict(type(cfg), data))),
        )

    # ------------------------------------------------------------ read-only checks

    def owned(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pat) for pat in ALWAYS_OURS + self.outputs)

    def foreign_entries(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if not self.owned(p.name))

    def marker(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / MARKER).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise RunDirError(
                f"{self.path}/{MARKER} is unreadable: this is no intact synth run dir; pick another output_dir"
            ) from None

    def check(self) -> RunDir:
        """Refuse what must not be touched; nothing is written."""
        if self.resume and self.overwrite:
            raise RunDirError("resume and overwrite exclude each other")
        if not self.path.exists():
            if self.resume:
                log.info("%s does not exist yet: starting a new run", self.path)
            return self
        if not self.path.is_dir():
            raise RunDirError(f"output_dir {self.path} exists and is not a directory")
        entries = [p.name for p in self.path.iterdir()]
        if not entries:
            return self
        marker = self.marker()
        if marker is None:
            raise RunDirError(
                f"{self.path} already exists and was not made by synth (it holds {_names(entries)}); "
                "synth writes only into new, empty or synth-made directories: pick another output_dir"
            )
        if marker.get("command") != self.command:
            raise RunDirError(
                f"{self.path} holds a `synth {marker.get('command')}` run, not a `synth {self.command}` one; "
                "pick another output_dir"
            )
        self.existing = True
        foreign = self.foreign_entries()
        if self.overwrite:
            if foreign:
                raise RunDirError(
                    f"--overwrite would clear {self.path}, but it holds {_names(foreign)}, which synth did "
                    "not write: move them away first, or pick another output_dir"
                )
            return self
        if self.mode == "journal" and not self.resume:
            raise RunDirError(
                f"{self.path} already holds a `synth {self.command}` run: pass --resume true to continue it, "
                "--overwrite true to start over, or pick another output_dir"
            )
        self._check_same_config()
        return self

    def _check_same_config(self) -> None:
        saved = self.path / "config.yaml"
        if not saved.exists():
            return
        import yaml

        try:
            old = yaml.safe_load(saved.read_text()) or {}
            old = self.saved_config(old) if self.saved_config else old
        except (ValueError, yaml.YAMLError) as err:
            raise RunDirError(f"{saved} cannot be read back ({err}); pick another output_dir") from None
        keys = config_diff(old, self.config)
        if keys:
            what = {"journal": "--resume", "rebuild": "rebuilding it", "continue": "continuing it"}[self.mode]
            fix = "--overwrite true to replace it" if self.mode != "continue" else "the same recipe"
            raise RunDirError(
                f"{what}: {self.path} was made with another config: {describe_diff(old, self.config, keys)}; "
                f"use {fix}, or pick another output_dir"
            )

    # ------------------------------------------------------------ writing

    def claim(self) -> RunDir:
        """Lock the dir, clear it on overwrite, write the marker and config.yaml (after `check`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if self.overwrite and self.existing:
            for entry in self.path.iterdir():
                if entry.name in (LOCK,) or not self.owned(entry.name):
                    continue
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        _write_atomic(
            self.path / MARKER,
            json.dumps(
                {
                    "command": self.command,
                    "synth_version": _version(),
                    "created_at": (self.marker() or {}).get("created_at")
                    or datetime.now(UTC).isoformat(timespec="seconds"),
                },
                indent=2,
            )
            + "\n",
        )
        _write_atomic(self.path / "config.yaml", self.config_yaml)
        return self

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: no lock
            return
        handle = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunDirError(
                f"{self.path} is in use by another synth process ({owner}); wait for it to finish, "
                "or pick another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _names(entries: list[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(entries)[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _version() -> str:
    import synth

    return synth.__version__
