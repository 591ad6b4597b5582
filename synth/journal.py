"""Append-only JSONL journal: long runs write each finished unit at once and resume from it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JournalError(ValueError):
    """A journal that cannot be read back; the message names the file and line."""


class Journal:
    """Rows keyed by ``id``; a torn last line (killed mid-write) is dropped on read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows, seen = [], set()
        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise JournalError(f"{self.path}: not UTF-8 text (byte {err.start}); the journal is damaged") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number >= len(lines) - 1:  # the torn tail of an interrupted write
                    log.warning("%s: dropping an incomplete last line", self.path)
                    continue
                raise JournalError(
                    f"{self.path}:{number}: corrupt line in the middle of the journal (edited by hand?); "
                    "restore it, or start a new run in another output_dir"
                ) from None
            if not isinstance(row, dict) or "id" not in row:
                raise JournalError(f"{self.path}:{number}: a journal line must be a JSON object with an 'id'")
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with self.path.open("a") as f:
            if f.tell() > 0:
                self._repair_tail()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _repair_tail(self) -> None:
        """Cut a torn last line so the next append starts on a fresh line."""
        with self.path.open("rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            content = f.read()
            f.seek(content.rfind(b"\n") + 1)
            f.truncate()
