"""Byte scans for erasure tests: is anything of a forgotten clip left in a folder?

A clip leaves traces of three kinds: its vector as raw float32 bytes (tables, SQLite,
the compressed index's vectors file), the same vector normalised to unit length (what a
cosine index stores), and its metadata strings (clip, recording and subject ids, the
audio path). Parquet files are also read back, because their pages are compressed and
dictionary-encoded: a value can be in the table without its bytes appearing in the file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hear_features.index import Metric
from hear_features.index.arrays import prepare

#: Bytes of a vector searched for: 8 floats from each of three places in it.
_WINDOW = 8


@dataclass
class Traces:
    """What identifies the forgotten clips, as byte strings and as table values."""

    clip_ids: set[str]
    needles: dict[bytes, str] = field(default_factory=dict)  # bytes -> what they are

    @classmethod
    def of(cls, embeddings: Path, clip_ids: set[str], strings: set[str]) -> Traces:
        """From the embeddings table *before* the forget: the clips' vectors (raw and
        normalised) and ``strings`` (ids, subject ids, paths) plus the clip ids."""
        table = pq.read_table(embeddings).to_pylist()
        traces = cls(set(clip_ids))
        for row in table:
            if row["clip_id"] not in clip_ids:
                continue
            raw = np.asarray(row["embedding"], np.float32)
            for name, vector in (("raw", raw), ("normalised", prepare(raw, Metric.COSINE)[0])):
                data = vector.tobytes()
                for start in (0, len(raw) // 2, len(raw) - _WINDOW):
                    piece = data[start * 4 : (start + _WINDOW) * 4]
                    traces.needles[piece] = f"{name} vector of {row['clip_id']}"
        for text in {*clip_ids, *strings}:
            traces.needles[text.encode()] = f"string {text!r}"
        return traces

    def scan(self, folder: Path) -> list[str]:
        """Every trace found under ``folder``: '<file>: <what>'."""
        found = []
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, f"nothing to scan in {folder}"
        for path in files:
            data = path.read_bytes()
            found += [f"{path}: {what}" for needle, what in self.needles.items() if needle in data]
            if path.suffix == ".parquet" and data[:4] == b"PAR1":
                table = pq.read_table(path)
                if "clip_id" in table.column_names:
                    left = self.clip_ids & set(table["clip_id"].to_pylist())
                    found += [f"{path}: row of {c}" for c in sorted(left)]
        return found


def forget_command(repo: Path, *selectors: str) -> list[str]:
    """``hear-features forget --repo REPO SELECTORS... --yes`` as a fresh process runs it."""
    return [
        sys.executable,
        "-m",
        "hear_features",
        "forget",
        "--repo",
        str(repo),
        *selectors,
        "--yes",
    ]
