"""Recordings -> clips: find audio files, name them by content, and cut them into windows.

A recording's id is derived from its bytes (SHA-256), and a clip's id from that and the
window's offset, so the same audio gets the same ids wherever and whenever it is read.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hear_features.audio import AudioLimits, WindowConfig, iter_windows
from hear_features.audio.formats import is_audio_name, skipped_by_extension
from hear_features.audio.sources import AudioSources, SourceRefused
from hear_features.errors import AudioError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRef:
    """Where a clip comes from; its samples travel separately (they are large)."""

    clip_id: str
    recording_id: str
    audio_uri: str
    offset_s: float
    rms_db: float | None = None


@dataclass(frozen=True)
class SourceProblem:
    """An input that could not be used, and why, for the end-of-run report."""

    source: str
    problem: str


def content_hash(path: Path) -> str:
    """Full SHA-256 hex digest of a file's bytes."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError as exc:
        problem = "is a broken symbolic link" if path.is_symlink() else "no such file"
        raise AudioError(path, problem) from exc
    except OSError as exc:
        raise AudioError(path, f"cannot be read: {exc.strerror or exc}") from exc


def recording_id_for(digest: str) -> str:
    """A recording id: the first 16 hex digits (64 bits) of its content hash."""
    return digest[:16]


def clip_id_for(recording_id: str, offset_s: float) -> str:
    """A clip id: recording id plus the window's offset in milliseconds."""
    return f"{recording_id}-{round(offset_s * 1000):08d}"


def discover_audio(inputs: Iterable[str]) -> tuple[list[Path], list[SourceProblem]]:
    """Expand files, folders (recursively) and glob patterns into audio file paths.

    Folders and globs keep the files whose ending is in
    :data:`~hear_features.audio.formats.AUDIO_EXTENSIONS`; the other files they hold are
    counted by ending and logged as a warning (``skipped 3 .txt, 1 .wma ...``), so nothing is
    dropped unseen. A file named explicitly is always tried, whatever its ending.
    Folders are walked without following symbolic links to folders, so a link loop
    cannot trap the walk; files that are links are kept and checked when read.
    Inputs that match nothing are reported, not silently dropped.
    """
    found: list[Path] = []
    problems: list[SourceProblem] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(_walk_files(path))
        elif glob.has_magic(item):
            candidates = sorted(Path(m) for m in glob.glob(item, recursive=True))
            candidates = [m for m in candidates if m.is_file()]
        elif path.exists() or path.is_symlink():
            add(path)
            continue
        else:
            problems.append(SourceProblem(item, "no such file or folder"))
            continue
        audio = [c for c in candidates if is_audio_name(c)]
        skipped = _skipped_text(candidates)
        if not audio:
            what = "folder holds" if path.is_dir() else "pattern matches"
            problems.append(
                SourceProblem(item, f"{what} no audio files{f' ({skipped})' if skipped else ''}")
            )
        elif skipped:
            log.warning("%s: %s", item, skipped)
        for f in audio:
            add(f)
    return found, problems


def _skipped_text(candidates: list[Path]) -> str:
    counts = skipped_by_extension(candidates)
    if not counts:
        return ""
    listed = ", ".join(f"{n} {ending}" for ending, n in counts.items())
    return f"skipped {listed} (not an audio file ending)"


def allowed_paths(
    paths: Iterable[Path], sources: AudioSources
) -> tuple[list[Path], list[SourceProblem]]:
    """Split ``paths`` into those the location policy allows and problems for the rest."""
    allowed: list[Path] = []
    problems: list[SourceProblem] = []
    for path in paths:
        try:
            sources.check(path)
        except SourceRefused as exc:
            problems.append(SourceProblem(str(path), exc.problem))
        else:
            allowed.append(path)
    return allowed, problems


def _walk_files(root: Path) -> Iterator[Path]:
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            yield Path(folder) / name


def iter_clips(
    path: Path,
    config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
    *,
    digest: str | None = None,
) -> Iterator[tuple[ClipRef, np.ndarray]]:
    """Yield each window of ``path`` with its ids; ``digest`` skips re-hashing the file."""
    recording_id = recording_id_for(digest or content_hash(path))
    uri = os.path.abspath(path)
    config = config or WindowConfig()
    found = False
    for window in iter_windows(path, config, limits):
        found = True
        ref = ClipRef(
            clip_id=clip_id_for(recording_id, window.offset_s),
            recording_id=recording_id,
            audio_uri=uri,
            offset_s=window.offset_s,
            rms_db=window.rms_db,
        )
        yield ref, window.samples
    if not found:
        floor = config.min_rms_db
        raise AudioError(
            path,
            "yields no clips"
            if floor is None
            else f"has no window louder than {floor:g} dBFS (silent?); "
            "pass --keep-silent to keep quiet windows",
        )
