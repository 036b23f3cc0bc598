"""A copy of the shipped ``feature_repo/`` filled with synthetic vectors, for benchmarks.

The benchmarks measure the product's own feature views (every field they define, the
metadata that search hits carry), not a toy view: :func:`make_repo` copies the
definitions and configuration, runs the real ``feast apply``, and :func:`fill` writes N
clips with their metadata straight into ``HearOnlineStore``, the way the batch engine
writes them.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tests.support.vectors import clustered_vectors

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("cough", "breath", "speech")
MODEL_ID = "hear-features/standin@v1-seed0"


def feast_cli() -> str:
    """The ``feast`` command of this environment."""
    return str(Path(sys.executable).with_name("feast"))


def make_repo(target: Path, model: Path | str) -> Path:
    """``feature_repo/`` copied to ``target`` with encoder ``model``, and applied."""
    target.mkdir(parents=True)
    shutil.copy2(ROOT / "feature_repo" / "definitions.py", target / "definitions.py")
    text = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    (target / "feature_store.yaml").write_text(
        text.replace("model: google/hear", f"model: {model}")
    )
    subprocess.run([feast_cli(), "apply"], cwd=target, check=True, capture_output=True)
    return target


def clip_id(i: int) -> str:
    """The clip id :func:`fill` gives the ``i``-th vector."""
    return f"{i:016x}-00000000"


def fill(repo: Path, n: int, *, seed: int | None = None, offline: bool = False) -> None:
    """N synthetic clips with metadata (``clustered_vectors(n, seed=seed or n)``); with
    ``offline``, their rows in the offline embeddings table too (training-set reads)."""
    data = clustered_vectors(n, 512, seed=n if seed is None else seed)
    for lo in range(0, n, 50_000):
        write(repo, lo, data[lo : lo + 50_000], offline=offline)


def write(
    repo: Path,
    first: int,
    vectors: np.ndarray,
    *,
    label: str | None = None,
    offline: bool = False,
) -> None:
    """Clips ``clip_id(first) ...`` with ``vectors`` [n, 512] and their metadata (label
    ``label``, else by position), written and checkpointed as the batch engine does; with
    ``offline``, appended to the offline embeddings table as well."""
    from hear_features.featurestore.online.store import HearOnlineStore
    from hear_features.featurestore.repo import open_store, tables
    from hear_features.featurestore.tables import append_rows
    from hear_features.schema import EMBEDDING_SCHEMA

    store = open_store(repo)
    view = store.get_feature_view("cough_embeddings")
    online = HearOnlineStore()  # writes straight to the store, as the batch engine does
    now = dt.datetime.now(dt.UTC)
    ids = range(first, first + len(vectors))
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
    known = {
        "embedding": pa.FixedSizeListArray.from_arrays(flat, 512).cast(pa.list_(pa.float32())),
        "model_id": [MODEL_ID] * len(ids),
        "recording_id": [f"{i:016x}" for i in ids],
        "subject_id": [f"subject-{i % 97}" for i in ids],
        "label": [label or LABELS[i % 3] for i in ids],
        "dataset": ["bench"] * len(ids),
        "device": ["synthetic"] * len(ids),
        "audio_uri": [f"/data/bench/{i}.wav" for i in ids],
        "offset_s": [0.0] * len(ids),
    }
    # Every feature the view defines, those added since this was written included.
    columns = {f.name: known.get(f.name) or _values(f, ids) for f in view.features}
    table = pa.table(
        {
            "clip_id": [clip_id(i) for i in ids],
            **columns,
            "event_timestamp": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
            "created": pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )
    online.write_arrow(store.config, view, table, "clip_id")
    online.checkpoint(store.config, view)
    if offline:
        append_rows(tables(store).embeddings, table, EMBEDDING_SCHEMA)


def _values(field: Any, ids: range) -> list[Any]:
    """Plausible values of a feature this module does not know by name."""
    kind = str(field.dtype).lower()
    if "string" in kind:
        return [f"{field.name}-{i % 7}" for i in ids]
    if "float" in kind:
        return [float(i % 100) for i in ids]
    if "bool" in kind:
        return [i % 2 == 0 for i in ids]
    if "int" in kind:
        return [i % 100 for i in ids]
    return [None] * len(ids)
