"""Register audio as ``clip`` entities: files, folders, globs or manifests -> rows.

Registration cuts each recording into clips (the same windowing as ``embed``) and
appends one row per new clip to the registration table. It is idempotent: a clip whose
latest registration already has the same metadata and location adds nothing. A clip
whose metadata changed (a corrected label, a moved file) gets a new row with a new
``event_timestamp``, so point-in-time reads see the version valid at each moment.

A manifest may carry the study's own columns (``gender``, ``covid``, ``age``...) once
they are declared in ``feature_store.yaml`` (:mod:`hear_features.study`); their values
are converted to the declared types. A manifest column that is neither built in nor
declared is refused, with the declaration to paste (types guessed from the values) or
``--ignore-column`` to leave it out: silently dropping study data would bias whatever is
trained on the rest.
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
from hear_features.featurestore import registration_history as history
from hear_features.featurestore.tables import append_rows, read_table
from hear_features.featurestore.tombstones import Tombstones
from hear_features.locking import file_lock
from hear_features.schema import (
    CLIP_SECONDS,
    EVENT_TIMESTAMP,
    REGISTRATION_SCHEMA,
    USER_METADATA,
)
from hear_features.study import StudyColumns, declaration_hint, infer_type
from hear_features.timestamps import parse_timestamps

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class Recording:
    """One audio file to register, with the metadata its clips will carry."""

    path: Path
    metadata: dict[str, object]
    event_timestamp: dt.datetime | None = None


@dataclass
class RegisterReport:
    recordings: int = 0
    added: int = 0
    unchanged: int = 0
    problems: list[SourceProblem] = field(default_factory=list)
    # Byte-identical copies with the same metadata: registered once, under the first path.
    duplicates: list[SourceProblem] = field(default_factory=list)
    # Audio registered before from another path for another subject: the newest
    # registration wins, so the clip now belongs to this run's subject.
    reassigned: list[SourceProblem] = field(default_factory=list)
    # A file registered before with other audio (changed in place): its earlier clips
    # stay stored and searchable until forgotten (the message names the recordings).
    replaced: list[SourceProblem] = field(default_factory=list)
    # Forget record id -> recordings it had forgotten that were registered again.
    readmitted: dict[str, int] = field(default_factory=dict)

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
    study: StudyColumns = StudyColumns(),
    ignore: Iterable[str] = (),
) -> tuple[list[Recording], list[SourceProblem]]:
    """Expand manifests (CSV/Parquet) and audio paths/folders/globs into recordings.

    Every audio location is checked against ``sources`` before anything reads it: a
    command-line input it refuses becomes a problem of that input, a manifest row it
    refuses makes the whole manifest invalid (as any other bad row does). ``study``: the
    declared study columns manifests may carry; ``ignore``: manifest columns to leave out.
    """
    sources = sources or AudioSources()
    recordings: list[Recording] = []
    problems: list[SourceProblem] = []
    plain: list[str] = []
    for item in inputs:
        if item.lower().endswith(MANIFEST_SUFFIXES) and Path(item).is_file():
            recordings.extend(read_manifest(Path(item), defaults, sources, study, ignore))
        else:
            plain.append(item)
    paths, found_problems = discover_audio(plain)
    problems.extend(found_problems)
    paths, refused = allowed_paths(paths, sources)
    problems.extend(refused)
    blank = {name: None for name in study}
    recordings.extend(Recording(p, {**defaults, **blank}) for p in paths)
    return recordings, problems


def read_manifest(
    path: Path,
    defaults: dict[str, str | None],
    sources: AudioSources | None = None,
    study: StudyColumns = StudyColumns(),
    ignore: Iterable[str] = (),
) -> list[Recording]:
    """Rows of a manifest: a ``path`` column (relative to the manifest, or a ``file://``
    URI), optional ``subject_id``, ``label``, ``dataset``, ``device`` and
    ``event_timestamp`` columns, and the declared ``study`` columns (any other column is
    refused unless named in ``ignore``)."""
    sources = sources or AudioSources()
    try:
        frame = (
            pd.read_parquet(path)
            if path.suffix.lower() == ".parquet"
            # Only an empty cell is missing: "None", "NaN" or "NA" in a text column (a
            # label, a subject id) is kept as written, not silently turned into null.
            else pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        )
    except Exception as exc:  # pandas raises many parser errors
        raise ConfigError(f"manifest {path} cannot be read: {exc}") from exc
    if "path" not in frame.columns:
        raise ConfigError(
            f"manifest {path} has no 'path' column "
            f"(columns: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    _refuse_undeclared(path, frame, study, set(ignore))
    timestamps = _manifest_timestamps(path, frame)
    recordings: list[Recording] = []
    seen: dict[Path, dict[str, object]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        raw = row["path"]
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"manifest {path}, row {i + 2}: empty 'path'")
        audio = _manifest_audio(path, i, raw, sources)
        metadata: dict[str, object] = {
            key: _text(row.get(key), defaults.get(key)) for key in USER_METADATA
        }
        for name in study:
            metadata[name] = study.convert(name, row.get(name), f"manifest {path}, row {i + 2}")
        if audio in seen:
            if seen[audio] != metadata:
                raise ConfigError(
                    f"manifest {path}, row {i + 2}: {raw} is listed twice with different metadata"
                )
            continue
        seen[audio] = metadata
        recordings.append(Recording(audio, metadata, timestamps[i] if timestamps else None))
    return recordings


def _refuse_undeclared(
    path: Path, frame: pd.DataFrame, study: StudyColumns, ignore: set[str]
) -> None:
    """A column that is neither built in, declared nor ignored would be lost: refuse it,
    with the declaration that would keep it."""
    known = {"path", EVENT_TIMESTAMP, *USER_METADATA, *study}
    unknown = [str(c) for c in frame.columns if c not in known and c not in ignore]
    if not unknown:
        return
    guessed = {name: infer_type(frame[name].tolist()) for name in unknown}
    raise ConfigError(
        f"manifest {path} has column(s) {', '.join(unknown)} that the feature repository "
        "does not declare, so their values would be lost. Declare them in "
        f"feature_store.yaml (types guessed from the values):\n{declaration_hint(guessed)}\n"
        "then run feast apply; or leave them out with --ignore-column NAME."
    )


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
    if EVENT_TIMESTAMP not in frame.columns:
        return None
    parsed = parse_timestamps(
        frame[EVENT_TIMESTAMP], EVENT_TIMESTAMP, where=lambda i: f"manifest {path}, row {i + 2}"
    )
    return [t.to_pydatetime() for t in parsed]


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
    allow_forgotten: bool = False,
    study: StudyColumns = StudyColumns(),
    event_timestamp: dt.datetime | None = None,
) -> RegisterReport:
    """Cut ``recordings`` into clips and append the new or changed ones to the table.

    Each row's ``created`` is ``now`` (default: the clock); its ``event_timestamp`` is the
    recording's own, else ``event_timestamp``, else ``now``. ``study``: the declared study
    columns, stored with every row (null where a recording has no value).

    Audio that ``hear-features forget`` forgot (its tombstones,
    :mod:`~hear_features.featurestore.tombstones`) is refused, naming the forget record,
    unless ``allow_forgotten``: then it is registered and its tombstones removed.
    """
    now = now or utc_now()
    report = RegisterReport()
    forgotten = Tombstones(table_path)
    readmit: list[tuple[str, list[int]]] = []
    schema = study.extend(REGISTRATION_SCHEMA)
    metadata = (*USER_METADATA, *study)
    state_columns = (*metadata, "audio_uri")
    with file_lock(table_path, timeout_s=lock_timeout_s, what=f"registration table {table_path}"):
        existing = read_table(table_path, schema)
        latest = history.latest_state(existing, state_columns)
        held = history.recordings_by_uri(existing)
        rows: dict[str, dict[str, object]] = {}  # to append
        seen: dict[str, dict[str, object]] = {}  # every clip of this run, new or unchanged
        for rec in recordings:
            try:
                new_rows = _rows_for(rec, window_config, limits, now, event_timestamp)
            except HearFeaturesError as exc:
                report.problems.append(
                    SourceProblem(str(rec.path), str(getattr(exc, "problem", exc)))
                )
                continue
            digest = str(new_rows[0]["content_hash"]) if new_rows else ""
            offsets = [round(float(r["offset_s"]) * 1000) for r in new_rows]  # type: ignore[arg-type]
            by = forgotten.find(digest, offsets) if new_rows else None
            if by is not None and not allow_forgotten:
                report.problems.append(
                    SourceProblem(
                        str(rec.path),
                        f"was forgotten (forget record {by}); pass --allow-forgotten "
                        "to register it again",
                    )
                )
                continue
            earlier = [seen.get(str(r["clip_id"])) for r in new_rows]
            if new_rows and all(
                o is not None and history.state_of(o, metadata) == history.state_of(r, metadata)
                for o, r in zip(earlier, new_rows, strict=True)
            ):
                first = earlier[0]["audio_uri"]  # type: ignore[index]
                report.duplicates.append(
                    SourceProblem(str(rec.path), f"has the same audio content as {first}")
                )
                continue
            clash = next(
                (
                    r
                    for o, r in zip(earlier, new_rows, strict=True)
                    if o is not None
                    and history.state_of(o, state_columns) != history.state_of(r, state_columns)
                ),
                None,
            )
            if clash is not None:
                other = seen[str(clash["clip_id"])]["audio_uri"]
                report.problems.append(
                    SourceProblem(
                        str(rec.path),
                        f"has the same audio content as {other} (recording "
                        f"{clash['recording_id']}) but different metadata in this run",
                    )
                )
                continue
            report.recordings += 1
            moved = history.other_subject(new_rows, latest, state_columns)
            if moved is not None:
                report.reassigned.append(SourceProblem(str(rec.path), moved))
            first = new_rows[0] if new_rows else {}
            at_uri = held.get(str(first.get("audio_uri")), [])
            if before := [r for r in at_uri if r != first.get("recording_id")]:
                report.replaced.append(
                    SourceProblem(str(rec.path), history.replaced_by_other_audio(before))
                )
            # The file holds other audio than at its last registration (changed back to
            # an earlier version): register its rows again, so that the newest
            # registration of the file is what it holds (materialise goes by that).
            changed_back = bool(at_uri) and at_uri[-1] != first.get("recording_id")
            if by is not None:
                readmit.append((digest, offsets))
            for row in new_rows:
                seen[str(row["clip_id"])] = row
                state = history.state_of(row, state_columns)
                if not changed_back and latest.get(str(row["clip_id"])) == state:
                    report.unchanged += 1
                else:
                    rows[str(row["clip_id"])] = row
        if rows:
            append_rows(
                table_path,
                pa.Table.from_pylist(list(rows.values()), schema),
                schema,
            )
        report.added = len(rows)
        for digest, offsets in readmit:
            for forget_id in forgotten.remove(digest, offsets):
                report.readmitted[forget_id] = report.readmitted.get(forget_id, 0) + 1
    return report


def _rows_for(
    rec: Recording,
    window_config: WindowConfig | None,
    limits: AudioLimits | None,
    now: dt.datetime,
    event_timestamp: dt.datetime | None,
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
            "duration_s": CLIP_SECONDS,
            "sample_rate": info.sample_rate,
            "content_hash": digest,
            "event_timestamp": rec.event_timestamp or event_timestamp or now,
            "created": now,
        }
        for ref, _samples in iter_clips(rec.path, window_config, limits, digest=digest)
    ]
