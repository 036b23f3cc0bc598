"""The audit log of deletions: append-only JSON lines in the feature repository.

``<repo>/forget-audit.jsonl``, one object per line: ``event`` (``forget`` or
``readmit``), ``id`` (the forget record), ``time`` (UTC, ISO 8601), ``who`` (the OS
user, or ``api-key:<key id>`` for the HTTP API), the ``selector`` as given but with every
value replaced by a salted SHA-256 (:func:`hashed_selector`; the entry's random ``salt``
beside it), and the ``counts`` of what was removed (or re-admitted).

Why the selector, and why hashed: an erasure must be provable to the person who asked
for it (:meth:`AuditLog.find` answers "was subject S forgotten, when, how much?" given S),
but the log must not name them in clear, or it would be the one file that still lists
who took part. A per-entry salt keeps entries from being linked to each other or to
precomputed tables; short, guessable ids can still be confirmed by someone who guesses
them, so treat the log as confidential too. It keeps no vector, audio, path or other
metadata. It lives beside ``feature_store.yaml``, outside the data folder.

Lines are appended with one ``write`` on a file opened for appending, then fsynced; a
line cut by a crash (it cannot end with a newline) is skipped when read and the next
entry starts on a line of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "forget-audit.jsonl"


def value_hash(salt: str, column: str, value: str) -> str:
    """One selector value as the audit log keeps it: SHA-256 of salt, column and value."""
    return hashlib.sha256(f"{salt}\0{column}\0{value}".encode()).hexdigest()


def hashed_selector(selector: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``{"salt": ..., "selector": {column: [value_hash, ...]}}`` for an audit entry, with
    a fresh random salt."""
    salt = secrets.token_hex(16)
    hashed = {c: [value_hash(salt, c, v) for v in values] for c, values in selector.items()}
    return {"salt": salt, "selector": hashed}


class AuditLog:
    """The audit log of one feature repository."""

    def __init__(self, repo: Path) -> None:
        self.path = repo / FILE

    def append(self, entry: dict[str, Any]) -> None:
        """Append one entry (and make sure it is on disk before returning)."""
        line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a line cut by a crash: start afresh
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry, oldest first."""
        if not self.path.exists():
            return []
        found = []
        for raw in self.path.read_bytes().splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                log.warning("skipping an incomplete line of %s", self.path)
        return found

    def find(self, column: str, value: str) -> list[dict[str, Any]]:
        """The forget entries whose selector named ``value`` in ``column`` (e.g. every
        forget that selected subject ``S``), oldest first."""
        return [
            e
            for e in self.entries()
            if e.get("event") == "forget"
            and isinstance(e.get("selector"), dict)
            and value_hash(str(e.get("salt")), column, value) in e["selector"].get(column, [])
        ]

    def has(self, event: str, forget_id: str) -> bool:
        return any(e.get("event") == event and e.get("id") == forget_id for e in self.entries())
