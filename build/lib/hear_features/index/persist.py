"""Saving and loading an index with a manifest that says what it holds.

A folder holds up to two generations of the index (``index-<n>.faiss``) and
``manifest.json`` describing both. A save writes the new index file (temp file, fsync,
rename), then the manifest (same), then deletes generations older than the previous
one. So a crash at any point leaves a manifest that names complete files, and a
corrupt current file leaves the previous generation to fall back on.

A compressed index also keeps its float32 vectors in ``vectors-<n>.f32`` (append-only,
shared by the generations that use it; each generation names how many rows belong to
it) and an id-to-row mapping in ``mapping-<n>.npy``. The vectors file is checked by
size only (hashing gigabytes on every load would cost more than the load), the mapping
by SHA-256.

After data is deleted, ``save(..., keep_previous=False)`` writes the index as the only
generation: the vectors file is rewritten with the live rows only, and every other
index, vectors and mapping file of the folder is deleted, so no file keeps a removed
vector.

Loading checks the file against its size and SHA-256, and the index against the
manifest (dimension, metric, count, a checksum of the ids) and against what the caller
expects (model id, dimension, metric). Index files are only ever read from the folder
the caller configured, through FAISS's own reader: nothing is unpickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from hear_features.index.config import IndexConfig, Metric
from hear_features.index.raw_vectors import RawVectors
from hear_features.index.vector_index import VectorIndex

from hear_features.atomic import atomic_path, atomic_write_bytes
from hear_features.errors import IndexLoadError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The files a generation may name.
_GENERATION_FILES = ("index-*.faiss", "vectors-*.f32", "mapping-*.npy")


@dataclass(frozen=True)
class Generation:
    """One saved index file and what it holds."""

    file: str
    size: int
    sha256: str
    count: int
    ids_checksum: str
    source_watermark: int
    kind: str
    nprobe: int | None
    created_at: str
    raw_file: str | None = None  # float32 vectors of a compressed index, for re-ranking
    raw_rows: int = 0
    mapping_file: str | None = None
    mapping_sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    format_version: int
    model_id: str
    dim: int
    metric: str
    current: Generation
    previous: Generation | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Manifest:
        try:
            raw = json.loads(data)
            previous = raw.get("previous")
            return cls(
                format_version=int(raw["format_version"]),
                model_id=str(raw["model_id"]),
                dim=int(raw["dim"]),
                metric=str(raw["metric"]),
                current=Generation(**raw["current"]),
                previous=Generation(**previous) if previous else None,
                extra=dict(raw.get("extra", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexLoadError(f"index manifest {where} is unreadable: {exc}") from exc


def ids_checksum(ids: np.ndarray) -> str:
    """Order-independent checksum of a set of int64 ids."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).tobytes()).hexdigest()


def read_manifest(folder: Path) -> Manifest | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    return Manifest.from_json(path.read_bytes(), path)


def save(
    index: VectorIndex,
    folder: Path,
    *,
    model_id: str,
    source_watermark: int,
    extra: dict[str, Any] | None = None,
    keep_previous: bool = True,
) -> Manifest:
    """Write ``index`` as the new current generation of ``folder`` (atomically).

    ``keep_previous=False``: the new generation is the only one (after deletions; see
    the module docstring).
    """
    folder.mkdir(parents=True, exist_ok=True)
    old = read_manifest(folder) if keep_previous and (folder / MANIFEST).exists() else None
    number = _next_generation(folder)
    target = folder / f"index-{number:06d}.faiss"
    with atomic_path(target) as tmp:
        faiss.write_index(index.index, str(tmp))
    digest, size = _file_digest(target)
    raw = _save_raw_vectors(index, folder, number, compact=not keep_previous)
    generation = Generation(
        file=target.name,
        size=size,
        sha256=digest,
        count=len(index),
        ids_checksum=ids_checksum(index.ids()),
        source_watermark=int(source_watermark),
        kind=index.kind,
        nprobe=index.nprobe,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        **raw,
    )
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_id=model_id,
        dim=index.dim,
        metric=str(index.config.metric),
        current=generation,
        previous=old.current if old is not None else None,
        extra=dict(extra or {}),
    )
    atomic_write_bytes(folder / MANIFEST, manifest.to_json())
    keep = _files_of(generation) | (_files_of(manifest.previous) if manifest.previous else set())
    for pattern in _GENERATION_FILES:
        for stale in folder.glob(pattern):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
    return manifest


def clear(folder: Path) -> None:
    """Delete the saved index of ``folder`` (the manifest first, so a crash halfway
    leaves files no manifest names, which the next save deletes)."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for pattern in _GENERATION_FILES:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def _files_of(generation: Generation) -> set[str]:
    names = {generation.file, generation.raw_file, generation.mapping_file}
    return {name for name in names if name}


def _save_raw_vectors(
    index: VectorIndex, folder: Path, number: int, *, compact: bool = False
) -> dict[str, Any]:
    """Append the index's new raw vectors to its file in ``folder``; write the mapping.

    ``compact``, or a vectors file that another process has compacted away meanwhile:
    write the live rows to a new file instead of appending.
    """
    raw = index.raw_vectors
    if raw is None:
        return {}
    if compact or (raw.path is not None and not raw.path.exists()):
        raw.compact_to(folder / f"vectors-{number:06d}.f32")
    elif raw.path is not None and raw.path.parent.resolve() != folder.resolve():
        # Built elsewhere: the rows already on file move with the index.
        moved = folder / f"vectors-{number:06d}.f32"
        with atomic_path(moved) as tmp:
            shutil.copyfile(raw.path, tmp)
        raw.path = moved
    path = raw.path or folder / f"vectors-{number:06d}.f32"
    rows = raw.flush_to(path)
    mapping = folder / f"mapping-{number:06d}.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.stack([raw.sorted_ids, raw.sorted_rows]))
    atomic_write_bytes(mapping, buffer.getvalue())
    return {
        "raw_file": path.name,
        "raw_rows": rows,
        "mapping_file": mapping.name,
        "mapping_sha256": _file_digest(mapping)[0],
    }


def _load_raw_vectors(
    folder: Path, generation: Generation, dim: int, verify: bool
) -> RawVectors | None:
    if generation.raw_file is None or generation.mapping_file is None:
        return None
    path, mapping = folder / generation.raw_file, folder / generation.mapping_file
    need = generation.raw_rows * dim * 4
    if not path.is_file() or path.stat().st_size < need:
        raise IndexLoadError(
            f"vectors file {path} is missing or shorter than the {generation.raw_rows} rows "
            "its manifest lists"
        )
    if not mapping.is_file() or (verify and _file_digest(mapping)[0] != generation.mapping_sha256):
        raise IndexLoadError(f"id mapping {mapping} is missing or does not match its checksum")
    try:
        ids, rows = np.load(mapping, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexLoadError(f"id mapping {mapping} is unreadable: {exc}") from exc
    if len(rows) and (rows.min() < 0 or rows.max() >= generation.raw_rows):
        raise IndexLoadError(f"id mapping {mapping} points outside {path}")
    return RawVectors(dim, path, generation.raw_rows, (ids.astype(np.int64), rows.astype(np.int64)))


def load(
    folder: Path,
    config: IndexConfig,
    *,
    model_id: str | None = None,
    dim: int | None = None,
    verify: bool = True,
) -> tuple[VectorIndex, Generation, Manifest]:
    """Load the current generation, or the previous one when the current is damaged.

    Raises :class:`IndexLoadError` when there is no usable generation, or when the
    manifest does not match the expected model, dimension or metric (a mismatch is
    never "fixed" by falling back).
    """
    manifest = read_manifest(folder)
    if manifest is None:
        raise IndexLoadError(f"no index in {folder} (no {MANIFEST})")
    if manifest.format_version != FORMAT_VERSION:
        raise IndexLoadError(
            f"index in {folder} has format version {manifest.format_version}; "
            f"this version reads {FORMAT_VERSION}"
        )
    _expect(manifest, folder, model_id=model_id, dim=dim, metric=config.metric)
    errors = []
    for generation in [manifest.current, manifest.previous]:
        if generation is None:
            continue
        try:
            index = _load_generation(folder, generation, manifest, config, verify)
        except IndexLoadError as exc:
            log.error("%s", exc)
            errors.append(str(exc))
            continue
        if generation is not manifest.current:
            log.warning("using the previous index generation %s of %s", generation.file, folder)
        return index, generation, manifest
    raise IndexLoadError("; ".join(errors))


def _expect(
    manifest: Manifest, folder: Path, *, model_id: str | None, dim: int | None, metric: Metric
) -> None:
    if model_id is not None and manifest.model_id != model_id:
        raise IndexLoadError(
            f"index in {folder} holds vectors of {manifest.model_id}, not of the configured "
            f"model {model_id}; rebuild it (delete the folder) after changing models"
        )
    if dim is not None and manifest.dim != dim:
        raise IndexLoadError(f"index in {folder} has dimension {manifest.dim}, expected {dim}")
    if manifest.metric != str(metric):
        raise IndexLoadError(
            f"index in {folder} uses metric {manifest.metric}, configured {metric}"
        )


def _load_generation(
    folder: Path, generation: Generation, manifest: Manifest, config: IndexConfig, verify: bool
) -> VectorIndex:
    path = folder / generation.file
    if not path.is_file():
        raise IndexLoadError(f"index file {path} is missing")
    size = path.stat().st_size
    if size != generation.size:
        raise IndexLoadError(
            f"index file {path} is {size} bytes but the manifest says {generation.size} "
            "(truncated?)"
        )
    if verify and _file_digest(path)[0] != generation.sha256:
        raise IndexLoadError(f"index file {path} does not match its checksum (corrupt)")
    # A compressed index is small; its large part (the vectors file) is mapped anyway.
    mmap = config.mmap and generation.kind.startswith("IVF") and generation.raw_file is None
    try:
        raw = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as exc:
        raise IndexLoadError(f"index file {path} cannot be read by FAISS: {exc}") from exc
    vectors = _load_raw_vectors(folder, generation, manifest.dim, verify)
    index = VectorIndex(raw, config, nprobe=generation.nprobe, mmapped=mmap, raw_vectors=vectors)
    if index.dim != manifest.dim or len(index) != generation.count:
        raise IndexLoadError(
            f"index file {path} holds {len(index)} vectors of dimension {index.dim}; "
            f"the manifest says {generation.count} of dimension {manifest.dim}"
        )
    if verify and ids_checksum(index.ids()) != generation.ids_checksum:
        raise IndexLoadError(f"index file {path} holds other ids than its manifest lists")
    return index


def _next_generation(folder: Path) -> int:
    numbers = [
        int(p.stem.split("-")[1])
        for p in folder.glob("index-*.faiss")
        if p.stem.split("-")[1].isdigit()
    ]
    return max(numbers, default=0) + 1


def _file_digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return digest, os.path.getsize(path)
