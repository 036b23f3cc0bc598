"""``hear-features register``, ``training-set`` and ``more-like``: the feature-store commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hear_features.cli.common import (
    HopOpt,
    KeepSilentOpt,
    MaxDurationOpt,
    MinRmsOpt,
    ModeOpt,
    OutOpt,
    RepoOpt,
    VerboseOpt,
    WhereOpt,
    audio_limits,
    console,
    err_console,
    parse_time,
    reports_errors,
    setup_logging,
    window_config,
)


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
        typer.Option(
            help="event_timestamp of the registrations (ISO 8601, UTC unless it has an "
            "offset; default now)."
        ),
    ] = None,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-column",
            help="A manifest column to leave out (repeatable); columns that are neither "
            "built in nor declared in feature_store.yaml (study_columns) are refused.",
        ),
    ] = None,
    mode: ModeOpt = "fixed",
    hop: HopOpt = 1.8,
    min_rms_db: MinRmsOpt = -50.0,
    keep_silent: KeepSilentOpt = False,
    max_duration: MaxDurationOpt = 7200.0,
    allow_forgotten: Annotated[
        bool,
        typer.Option(
            "--allow-forgotten",
            help="Register audio that `hear-features forget` removed (consent given again).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Register recordings as clip entities (one row per 2 s window) in the registration table.

    Registering the same audio again adds nothing; changed metadata adds a new version.
    Audio that was forgotten is refused unless --allow-forgotten is given. A manifest's
    study columns (declared in feature_store.yaml, batch_engine: study_columns) are kept
    with their types. Unreadable files are listed with their reason; the exit code is 1
    when any failed.
    """
    from hear_features.featurestore.config import audio_sources, study_columns
    from hear_features.featurestore.forget import log_readmitted, resume
    from hear_features.featurestore.registration import recordings_from_inputs
    from hear_features.featurestore.registration import register as register_clips
    from hear_features.featurestore.repo import open_store, tables

    setup_logging(verbose)
    store = open_store(repo)
    for forget_id in resume(store):
        console.print(f"completed the interrupted forget {forget_id}", highlight=False)
    where = tables(store).registrations
    defaults = {"label": label, "subject_id": subject, "dataset": dataset, "device": device}
    study = study_columns(store.config)
    recordings, problems = recordings_from_inputs(
        sources, defaults, audio_sources(store.config), study, ignore_column or ()
    )
    report = register_clips(
        recordings,
        where,
        window_config=window_config(mode, hop, min_rms_db, keep_silent),
        limits=audio_limits(max_duration),
        event_timestamp=parse_time(timestamp, "--timestamp"),
        allow_forgotten=allow_forgotten,
        study=study,
    )
    log_readmitted(store, report.readmitted)
    for forget_id, count in report.readmitted.items():
        console.print(
            f"re-admitted {count} recording(s) forgotten by {forget_id} (logged in "
            "forget-audit.jsonl)",
            highlight=False,
        )
    problems += report.problems
    console.print(
        f"registered {report.added} new clip(s) from {report.recordings} recording(s) "
        f"({report.unchanged} already registered) in {where}"
    )
    for d in report.duplicates:
        console.print(f"= {d.source}: {d.problem}; registered once", highlight=False)
    for r in (*report.reassigned, *report.replaced):
        err_console.print(f"[yellow]![/] {r.source}: {r.problem}", highlight=False)
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
    out: OutOpt,
    repo: RepoOpt = None,
    where: WhereOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Point-in-time correct training set: embeddings and metadata valid at each timestamp.

    --where keeps the rows whose values at their timestamp meet every condition.
    """
    from hear_features.featurestore.repo import open_store
    from hear_features.featurestore.training import read_entities, write_training_set
    from hear_features.featurestore.training import training_set as build_training_set

    setup_logging(verbose)
    store = open_store(repo)
    frame = build_training_set(store, read_entities(entities), where=where or ())
    write_training_set(frame, out)
    found = int(frame["embedding"].notna().sum())
    console.print(
        f"wrote {len(frame)} rows ({found} with an embedding at their timestamp) to {out}"
    )


@reports_errors
def more_like(
    seeds: Annotated[list[str] | None, typer.Argument(help="Seed clip ids.")] = None,
    out: OutOpt = Path("more_like.parquet"),
    audio: Annotated[
        Path | None, typer.Option(help="Use the windows of this audio file as seeds.")
    ] = None,
    k: Annotated[
        int,
        typer.Option(
            "-k",
            "--k",
            min=1,
            max=10_000,
            help="Neighbours per seed (each clip is listed once, under its nearest seed).",
        ),
    ] = 10,
    repo: RepoOpt = None,
    where: WhereOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Expand seed clips (or an audio file) into the k nearest stored clips, as training rows.

    --where restricts the neighbours (the search filters on it; with != and not in, clips
    without a value are kept, as the store's filters do).
    """
    from hear_features.featurestore import runtime
    from hear_features.featurestore.config import EncoderSettings
    from hear_features.featurestore.online.fields import filters_from_where
    from hear_features.featurestore.repo import open_store
    from hear_features.featurestore.search import clip_search
    from hear_features.featurestore.training import more_like_these, write_training_set

    setup_logging(verbose)
    store = open_store(repo)
    filters = clip_search(store).check_filters(filters_from_where(where or ()))
    encoder = runtime.encoder_for(EncoderSettings.from_repo_config(store.config)) if audio else None
    frame = more_like_these(
        store, seed_ids=seeds or [], audio=audio, encoder=encoder, k=k, filters=filters
    )
    write_training_set(frame, out)
    given = frame.attrs.get("seed_ids", [])
    listed = set(frame["seed_id"])
    console.print(
        f"wrote {len(frame)} neighbour rows for {len(listed)} of {len(given)} seed(s) to {out}"
    )
    if frame.empty:
        why = "meets the --where conditions" if where else "is stored besides the seeds"
        err_console.print(f"[yellow]![/] no neighbour: no other clip {why}", highlight=False)
        return
    without = [seed for seed in given if seed not in listed]
    if without:
        shown = ", ".join(without[:5]) + (" ..." if len(without) > 5 else "")
        err_console.print(
            f"[yellow]![/] {len(without)} seed(s) without rows of their own: {shown} "
            "(each clip is listed once, under its nearest seed, and seeds are never "
            "neighbours)",
            highlight=False,
        )
    preview = frame[["seed_id", "rank", "clip_id", "label", "distance"]].head(10)
    console.print(preview.to_string(index=False))
