"""Register audio as ``clip`` entities: files, folders, globs or manifests -> rows.

Registration cuts each recording into clips (the same windowing as ``embed``) and
appends one row per new clip to the registration table. It is idempotent: a clip whose
latest registration already has the same metadata and location adds nothing. A clip
whose metadata changed (a corrected label, a moved file) gets a new row with a new
``event_timestamp``, so point-in-time reads see the version valid at each moment.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from hear_features.audio import AudioLimits, WindowConfig, probe
from hear_features.audio.sources import AudioSources, SourceRefused
from hear_features.clips import (
    SourceProblem,
    allowed_paths,
    content_hash,
    discover_audio,
    iter_clips,
)
from hear_features.errors import ConfigError, HearFeaturesError
from hear_features.featurestore.tables import (
    REGISTRATION_SCHEMA,
    USER_METADATA,
    append_rows,
    read_table,
)
from hear_features.locking import file_lock

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet")
_TIMESTAMP_COLUMN = "event_timestamp"


@dataclass(frozen=True)
class Recording:
    """One audio file to register, with the metadata its clips will carry."""

    path: Path
    metadata: dict[str, str | None]
    event_timestamp: dt.datetime | None = None


@dataclass
class RegisterReport:
    recordings: int = 0
    added: int = 0
    unchanged: int = 0
    problems: list[SourceProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime (microsecond resolution, as stored)."""
    return dt.datetime.now(dt.UTC)


def recordings_from_inputs(
    inputs: Iterable[str],
    defaults: dict[str, str | None],
    sources: AudioSources | None = None,
) -> tuple[list[Recording], list[SourceProblem]]:
    """Expand manifests (CSV/Parquet) and audio paths/folders/globs into recordings.

    Every audio location is checked against ``sources`` before anything reads it: a
    command-line input it refuses becomes a problem of that input, a manifest row it
    refuses makes the whole manifest invalid (as any other bad row does).
    """
    sources = sources or AudioSources()
    recordings: list[Recording] = []
    problems: list[SourceProblem] = []
    plain: list[str] = []
    for item in inputs:
        if item.lower().endswith(MANIFEST_SUFFIXES) and Path(item).is_file():
            recordings.extend(read_manifest(Path(item), defaults, sources))
        else:
            plain.append(item)
    paths, found_problems = discover_audio(plain)
    problems.extend(found_problems)
    paths, refused = allowed_paths(paths, sources)
    problems.extend(refused)
    recordings.extend(Recording(p, dict(defaults)) for p in paths)
    return recordings, problems


def read_manifest(
    path: Path, defaults: dict[str, str | None], sources: AudioSources | None = None
) -> list[Recording]:
    """Rows of a manifest: a ``path`` column (relative to the manifest, or a ``file://``
    URI) and optional ``subject_id``, ``label``, ``dataset``, ``device`` and
    ``event_timestamp`` columns."""
    sources = sources or AudioSources()
    try:
        frame = (
            pd.read_parquet(path)
            if path.suffix.lower() == ".parquet"
            else pd.read_csv(path, dtype=str)
        )
    except Exception as exc:  # pandas raises many parser errors
        raise ConfigError(f"manifest {path} cannot be read: {exc}") from exc
    if "path" not in frame.columns:
        raise ConfigError(
            f"manifest {path} has no 'path' column "
            f"(columns: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    unknown = set(frame.columns) - {"path", _TIMESTAMP_COLUMN, *USER_METADATA}
    if unknown:
        log.warning("manifest %s: ignoring columns %s", path, ", ".join(sorted(unknown)))
    timestamps = _manifest_timestamps(path, frame)
    recordings: list[Recording] = []
    seen: dict[Path, dict[str, str | None]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        raw = row["path"]
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"manifest {path}, row {i + 2}: empty 'path'")
        audio = _manifest_audio(path, i, raw, sources)
        metadata = {key: _text(row.get(key), defaults.get(key)) for key in USER_METADATA}
        if audio in seen:
            if seen[audio] != metadata:
                raise ConfigError(
                    f"manifest {path}, row {i + 2}: {raw} is listed twice with different metadata"
                )
            continue
        seen[audio] = metadata
        recordings.append(Recording(audio, metadata, timestamps[i] if timestamps else None))
    return recordings


def _manifest_audio(manifest: Path, i: int, raw: str, sources: AudioSources) -> Path:
    """The audio file a manifest row names, checked against the location policy."""
    try:
        local = sources.parse(raw)
        audio = local if local.is_absolute() else manifest.parent / local
        sources.check(audio)  # relative paths resolve against the manifest's folder
    except SourceRefused as exc:
        raise ConfigError(f"manifest {manifest}, row {i + 2}: {raw} {exc.problem}") from exc
    return audio


def _manifest_timestamps(path: Path, frame: pd.DataFrame) -> list[dt.datetime] | None:
    if _TIMESTAMP_COLUMN not in frame.columns:
        return None
    parsed = pd.to_datetime(frame[_TIMESTAMP_COLUMN], utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ConfigError(
            f"manifest {path}, row {i + 2}: event_timestamp {frame[_TIMESTAMP_COLUMN].iloc[i]!r} "
            "is not an ISO 8601 date/time"
        )
    return [
        t.to_pydatetime().replace(tzinfo=dt.UTC) if t.tzinfo is None else t.to_pydatetime()
        for t in parsed
    ]


def _text(value: object, default: str | None) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return default
    text = str(value).strip()
    return text or default


def register(
    recordings: list[Recording],
    table_path: Path,
    *,
    window_config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
    now: dt.datetime | None = None,
    lock_timeout_s: float = 600.0,
) -> RegisterReport:
    """Cut ``recordings`` into clips and append the new or changed ones to the table."""
    now = now or utc_now()
    report = RegisterReport()
    with file_lock(table_path, timeout_s=lock_timeout_s, what=f"registration table {table_path}"):
        existing = read_table(table_path, REGISTRATION_SCHEMA)
        latest = _latest_state(existing)
        rows: dict[str, dict[str, object]] = {}
        for rec in recordings:
            try:
                new_rows = _rows_for(rec, window_config, limits, now)
            except HearFeaturesError as exc:
                report.problems.append(
                    SourceProblem(str(rec.path), str(getattr(exc, "problem", exc)))
                )
                continue
            clash = next(
                (r for r in new_rows if _state_of(rows.get(str(r["clip_id"]), r)) != _state_of(r)),
                None,
            )
            if clash is not None:
                other = rows[str(clash["clip_id"])]["audio_uri"]
                report.problems.append(
                    SourceProblem(
                        str(rec.path),
                        f"has the same audio content as {other} (recording "
                        f"{clash['recording_id']}) but different metadata in this run",
                    )
                )
                continue
            report.recordings += 1
            for row in new_rows:
                if latest.get(str(row["clip_id"])) == _state_of(row):
                    report.unchanged += 1
                else:
                    rows[str(row["clip_id"])] = row
        if rows:
            append_rows(
                table_path,
                pa.Table.from_pylist(list(rows.values()), REGISTRATION_SCHEMA),
                REGISTRATION_SCHEMA,
            )
        report.added = len(rows)
    return report


def _rows_for(
    rec: Recording, window_config: WindowConfig | None, limits: AudioLimits | None, now: dt.datetime
) -> list[dict[str, object]]:
    info = probe(rec.path, limits)
    digest = content_hash(rec.path)
    return [
        {
            "clip_id": ref.clip_id,
            "recording_id": ref.recording_id,
            **rec.metadata,
            "audio_uri": ref.audio_uri,
            "offset_s": ref.offset_s,
            "duration_s": 2.0,
            "sample_rate": info.sample_rate,
            "content_hash": digest,
            "event_timestamp": rec.event_timestamp or now,
            "created": now,
        }
        for ref, _samples in iter_clips(rec.path, window_config, limits, digest=digest)
    ]


_STATE_COLUMNS = (*USER_METADATA, "audio_uri")


def _state_of(row: dict[str, object]) -> tuple[object, ...]:
    return tuple(row.get(c) for c in _STATE_COLUMNS)


def _latest_state(table: pa.Table) -> dict[str, tuple[object, ...]]:
    """For each clip, the metadata of its newest registration."""
    if table.num_rows == 0:
        return {}
    frame = table.select(["clip_id", "event_timestamp", "created", *_STATE_COLUMNS]).to_pandas()
    frame = frame.sort_values(["event_timestamp", "created"]).drop_duplicates(
        "clip_id", keep="last"
    )
    return {
        row["clip_id"]: tuple(None if pd.isna(row[c]) else row[c] for c in _STATE_COLUMNS)
        for row in frame.to_dict("records")
    }
