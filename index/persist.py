"""Saving and loading an index with a manifest that says what it holds.

A folder holds up to two generations of the index (``index-<n>.faiss``) and
``manifest.json`` describing both. A save writes the new index file (temp file, fsync,
rename), then the manifest (same), then deletes generations older than the previous
one. So a crash at any point leaves a manifest that names complete files, and a
corrupt current file leaves the previous generation to fall back on.

Loading checks the file against its size and SHA-256, and the index against the
manifest (dimension, metric, count, a checksum of the ids) and against what the caller
expects (model id, dimension, metric). Index files are only ever read from the folder
the caller configured, through FAISS's own reader: nothing is unpickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from hear_features.index.config import IndexConfig, Metric
from hear_features.index.vector_index import VectorIndex

from hear_features.atomic import atomic_path, atomic_write_bytes
from hear_features.errors import HearFeaturesError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexLoadError(HearFeaturesError):
    """An index file or manifest is missing, corrupt, or does not match what was asked for."""

    http_status = 503


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
) -> Manifest:
    """Write ``index`` as the new current generation of ``folder`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    old = read_manifest(folder) if (folder / MANIFEST).exists() else None
    number = _next_generation(folder)
    target = folder / f"index-{number:06d}.faiss"
    with atomic_path(target) as tmp:
        faiss.write_index(index.index, str(tmp))
    digest, size = _file_digest(target)
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
    keep = {generation.file} | ({manifest.previous.file} if manifest.previous else set())
    for stale in folder.glob("index-*.faiss"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return manifest


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
    mmap = config.mmap and generation.kind.startswith("IVF")
    try:
        raw = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as exc:
        raise IndexLoadError(f"index file {path} cannot be read by FAISS: {exc}") from exc
    index = VectorIndex(raw, config, nprobe=generation.nprobe)
    index.mmapped = mmap
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
