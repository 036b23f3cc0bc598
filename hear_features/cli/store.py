"""``hear-features register``, ``training-set`` and ``more-like``: the feature-store commands."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from hear_features.cli.common import (
    HopOpt,
    KeepSilentOpt,
    MaxDurationOpt,
    MinRmsOpt,
    ModeOpt,
    VerboseOpt,
    audio_limits,
    console,
    err_console,
    reports_errors,
    setup_logging,
    window_config,
)
from hear_features.errors import ConfigError
from hear_features.featurestore import runtime
from hear_features.featurestore.registration import (
    recordings_from_inputs,
)
from hear_features.featurestore.registration import (
    register as register_clips,
)
from hear_features.featurestore.repo import open_store, tables
from hear_features.featurestore.settings import EncoderSettings, audio_sources
from hear_features.featurestore.training import (
    more_like_these,
    read_entities,
    write_training_set,
)
from hear_features.featurestore.training import (
    training_set as build_training_set,
)

RepoOpt = Annotated[
    Path | None,
    typer.Option(
        help="Feature repository (default: . if it has feature_store.yaml, else ./feature_repo)."
    ),
]


def _parse_time(value: str | None, what: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = pd.Timestamp(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} is not an ISO 8601 date/time") from exc
    return (
        parsed.tz_localize("UTC") if parsed.tzinfo is None else parsed.tz_convert("UTC")
    ).to_pydatetime()


@reports_errors
def register(
    sources: Annotated[
        list[str], typer.Argument(help="Audio files, folders, globs, or CSV/Parquet manifests.")
    ],
    repo: RepoOpt = None,
    label: Annotated[
        str | None, typer.Option(help="Label for clips of non-manifest inputs.")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Subject id for non-manifest inputs.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name for all inputs without one.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Recording device for inputs without one.")
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option(help="event_timestamp of the registrations (ISO 8601; default now)."),
    ] = None,
    mode: ModeOpt = "fixed",
    hop: HopOpt = 1.8,
    min_rms_db: MinRmsOpt = -50.0,
    keep_silent: KeepSilentOpt = False,
    max_duration: MaxDurationOpt = 7200.0,
    verbose: VerboseOpt = False,
) -> None:
    """Register recordings as clip entities (one row per 2 s window) in the registration table.

    Registering the same audio again adds nothing; changed metadata adds a new version.
    Unreadable files are listed with their reason; the exit code is 1 when any failed.
    """
    setup_logging(verbose)
    store = open_store(repo)
    where = tables(store).registrations
    defaults = {"label": label, "subject_id": subject, "dataset": dataset, "device": device}
    recordings, problems = recordings_from_inputs(sources, defaults, audio_sources(store.config))
    report = register_clips(
        recordings,
        where,
        window_config=window_config(mode, hop, min_rms_db, keep_silent),
        limits=audio_limits(max_duration),
        now=_parse_time(timestamp, "--timestamp"),
    )
    problems += report.problems
    console.print(
        f"registered {report.added} new clip(s) from {report.recordings} recording(s) "
        f"({report.unchanged} already registered) in {where}"
    )
    for p in problems:
        err_console.print(f"[red]x[/] {p.source}: {p.problem}", highlight=False)
    if problems:
        err_console.print(f"[bold red]{len(problems)} input(s) failed[/]")
        raise typer.Exit(1)


@reports_errors
def training_set(
    entities: Annotated[
        Path, typer.Argument(help="CSV/Parquet with clip_id, event_timestamp (+ any columns).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")],
    repo: RepoOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Point-in-time correct training set: embeddings and metadata valid at each timestamp."""
    setup_logging(verbose)
    store = open_store(repo)
    frame = build_training_set(store, read_entities(entities))
    write_training_set(frame, out)
    found = int(frame["embedding"].notna().sum())
    console.print(
        f"wrote {len(frame)} rows ({found} with an embedding at their timestamp) to {out}"
    )


@reports_errors
def more_like(
    seeds: Annotated[list[str] | None, typer.Argument(help="Seed clip ids.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.")] = Path(
        "more_like.parquet"
    ),
    audio: Annotated[
        Path | None, typer.Option(help="Use the windows of this audio file as seeds.")
    ] = None,
    k: Annotated[
        int, typer.Option("-k", "--k", min=1, max=10_000, help="Neighbours per seed.")
    ] = 10,
    repo: RepoOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Expand seed clips (or an audio file) into the k nearest stored clips, as training rows."""
    setup_logging(verbose)
    store = open_store(repo)
    encoder = runtime.encoder_for(EncoderSettings.from_repo_config(store.config)) if audio else None
    frame = more_like_these(store, seed_ids=seeds or [], audio=audio, encoder=encoder, k=k)
    write_training_set(frame, out)
    console.print(
        f"wrote {len(frame)} neighbour rows for {frame['seed_id'].nunique()} seed(s) to {out}"
    )
    preview = frame[["seed_id", "rank", "clip_id", "label", "distance"]].head(10)
    console.print(preview.to_string(index=False))
