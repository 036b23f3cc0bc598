"""``hear-features make-standin`` and ``hear-features embed``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hear_features.cli.common import (
    BatchOpt,
    DeviceOpt,
    HopOpt,
    KeepSilentOpt,
    MaxDurationOpt,
    MinRmsOpt,
    ModelOpt,
    ModeOpt,
    OutOpt,
    RevisionOpt,
    VerboseOpt,
    audio_limits,
    console,
    err_console,
    reports_errors,
    setup_logging,
    window_config,
)
from hear_features.defaults import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from hear_features.embedding import RecordingEmbeddings


@reports_errors
def make_standin(
    out_dir: Annotated[Path, typer.Argument(help="New directory for the SavedModel.")],
    seed: Annotated[int, typer.Option(help="Seed of the fixed projection.")] = 0,
) -> None:
    """Build the project's HeAR-compatible stand-in SavedModel (not HeAR)."""
    from hear_features.encoders import build_standin

    try:
        path = build_standin(out_dir, seed)
    except FileExistsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"stand-in SavedModel written to {path} (stand-in encoder, not HeAR)")


@reports_errors
def embed(
    inputs: Annotated[list[str], typer.Argument(help="Audio files, folders or glob patterns.")],
    out: OutOpt,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    device: DeviceOpt = "auto",
    mode: ModeOpt = "fixed",
    hop: HopOpt = 1.8,
    min_rms_db: MinRmsOpt = -50.0,
    keep_silent: KeepSilentOpt = False,
    max_duration: MaxDurationOpt = 7200.0,
    verbose: VerboseOpt = False,
) -> None:
    """Embed every 2 s window of the inputs into a Parquet file, one row per window.

    Unreadable files are listed with their reason and the rest are embedded; the exit
    code is 1 when any input failed. With ``HEAR_AUDIO_ROOTS`` set, files outside those
    folders are refused.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from hear_features.audio.sources import AudioSources
    from hear_features.clips import allowed_paths, discover_audio
    from hear_features.embedding import embed_recordings
    from hear_features.embeddings_file import write_embeddings
    from hear_features.encoders import HearEncoder

    setup_logging(verbose)
    config = window_config(mode, hop, min_rms_db, keep_silent)
    limits = audio_limits(max_duration)
    paths, problems = discover_audio(inputs)
    paths, refused = allowed_paths(paths, AudioSources.from_config(None))  # HEAR_AUDIO_ROOTS
    problems += refused
    if not paths:
        for p in problems:
            err_console.print(f"[red]x[/] {p.source}: {p.problem}", highlight=False)
        err_console.print("[bold red]error:[/] no audio files to embed")
        raise typer.Exit(1)
    encoder = HearEncoder.load(model, revision=revision, batch_size=batch_size, device=device)
    console.print(f"encoder: {encoder.describe()}", highlight=False)

    with Progress(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files  {task.fields[clips]} clips"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task("embed", total=len(paths), clips=0)
        clips = 0

        def on_batch(n: int) -> None:
            nonlocal clips
            clips += n
            progress.update(task, clips=clips)

        def counted() -> Iterator[RecordingEmbeddings]:
            for rec in embed_recordings(
                paths,
                encoder,
                batch_size=batch_size,
                window_config=config,
                limits=limits,
                on_batch=on_batch,
            ):
                progress.advance(task)
                yield rec

        rows, failures = write_embeddings(counted(), out, encoder.model_id)

    console.print(f"wrote {rows} clips from {len(paths) - len(failures)} recordings to {out}")
    messages = [f"{p.source}: {p.problem}" for p in problems] + [str(f.error) for f in failures]
    for message in messages:
        err_console.print(f"[red]x[/] {message}", highlight=False)
    if messages:
        err_console.print(f"[bold red]{len(messages)} input(s) failed[/]")
        raise typer.Exit(1)
