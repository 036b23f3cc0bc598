"""Tombstones: what ``register`` needs to refuse audio that was forgotten, and no more.

Clip and recording ids are derived from the audio's SHA-256, so registering the same
files again would bring forgotten clips back under the same ids. A tombstone lets
``register`` recognise that audio without keeping it or its metadata: it is a SHA-256
of the recording's content hash (salted with a fixed label, so the file holds neither
the content hash nor the recording id, which is its first 16 hex digits) and, when only
some clips of a recording were forgotten, of each clip's offset. Each tombstone names
the forget record (its id in the audit log) that left it.

The file lives beside the registration table (``<table>.forgotten.json``), written
atomically. ``register --allow-forgotten`` re-admits such audio (consent given again)
and removes its tombstones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from hear_features.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

_SALT = b"hear-features forgotten audio v1\0"
#: The part of a tombstone that stands for every clip of a recording.
WHOLE = "*"


def tombstone(content_hash: str, offset_ms: int | str = WHOLE) -> str:
    """The tombstone of a recording's clip at ``offset_ms`` (or of the whole recording)."""
    return hashlib.sha256(_SALT + f"{content_hash}:{offset_ms}".encode()).hexdigest()


class Tombstones:
    """The tombstones of one registration table."""

    def __init__(self, table_path: Path) -> None:
        self.path = table_path.with_name(table_path.name + ".forgotten.json")
        self._held: dict[str, str] | None = None  # read once per object (writers hold the lock)

    def read(self) -> dict[str, str]:
        """tombstone -> forget id."""
        if self._held is None:
            self._held = self._load()
        return self._held

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            return {str(k): str(v) for k, v in json.loads(self.path.read_bytes()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            # Refusing every registration would be worse than re-admitting forgotten
            # audio silently; say so loudly instead.
            log.error(
                "tombstone file %s is unreadable (%s); forgotten audio is not refused",
                self.path,
                exc,
            )
            return {}

    def add(self, forget_id: str, stones: Iterable[str]) -> None:
        """Record ``stones`` under ``forget_id`` (idempotent)."""
        current = self.read()
        new = {s: forget_id for s in stones if s not in current}
        if new:
            self._write({**current, **new})

    def find(self, content_hash: str, offsets_ms: Iterable[int] = ()) -> str | None:
        """The forget id that forgot this recording, or one of its clips (None: none)."""
        current = self.read()
        for stone in (tombstone(content_hash), *(tombstone(content_hash, o) for o in offsets_ms)):
            if stone in current:
                return current[stone]
        return None

    def remove(self, content_hash: str, offsets_ms: Iterable[int]) -> list[str]:
        """Re-admit a recording: drop its tombstones; returns the forget ids they named."""
        current = self.read()
        stones = {tombstone(content_hash), *(tombstone(content_hash, o) for o in offsets_ms)}
        gone = sorted({current[s] for s in stones if s in current})
        if gone:
            self._write({s: f for s, f in current.items() if s not in stones})
        return gone

    def _write(self, stones: dict[str, str]) -> None:
        atomic_write_bytes(self.path, json.dumps(stones, indent=0, sort_keys=True).encode())
        self._held = stones
