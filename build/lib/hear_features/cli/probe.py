"""``hear-features probe``: how much do the stored embeddings know about a label?

The probe's own modules (scikit-learn, FAISS, matplotlib, and TensorFlow for the
acoustic baseline) are imported when the command runs, not when the CLI starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hear_features.cli.common import (
    RepoOpt,
    VerboseOpt,
    console,
    err_console,
    parse_time,
    reports_errors,
    setup_logging,
)

if TYPE_CHECKING:
    from hear_features.probe.report import ProbeReport


@reports_errors
def probe(
    target: Annotated[
        str, typer.Option(help="Metadata column to predict (label, or a study column).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and plots.")
    ] = Path("probe-report"),
    repo: RepoOpt = None,
    group: Annotated[
        str,
        typer.Option(help="Column whose values never straddle a split (empty: the recording)."),
    ] = "subject_id",
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Keep units with COLUMN OP VALUE (= != < <= > >= in, not in); repeatable (AND)."
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="auto, binary, multiclass or regression.")] = "auto",
    level: Annotated[
        str, typer.Option(help="clip (each 2 s window) or recording (mean of its windows).")
    ] = "clip",
    positive: Annotated[
        str | None,
        typer.Option(help="Positive class of a binary task (default: the rarer); or X vs rest."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Read labels as of this time (ISO 8601; default now)."),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=100, help="Outer grouped folds.")] = 5,
    repeats: Annotated[
        int, typer.Option(min=1, max=100, help="Repeats of the k-fold, one seed each.")
    ] = 3,
    seed: Annotated[int, typer.Option(min=0, help="First seed (repeat r uses seed + r).")] = 0,
    bootstrap: Annotated[
        int, typer.Option(min=0, max=100_000, help="Group-bootstrap resamples for the 95% CIs.")
    ] = 1000,
    confound: Annotated[
        list[str] | None,
        typer.Option(
            help="Also check this column as a confound (sample_rate, dataset, device always)."
        ),
    ] = None,
    duplicate_distance: Annotated[
        float, typer.Option(help="Cosine distance below which two clips are near-duplicates.")
    ] = 0.01,
    duplicates: Annotated[
        str, typer.Option(help="warn: list near-duplicates; merge: also join their groups.")
    ] = "warn",
    acoustic: Annotated[
        bool, typer.Option(help="Fit the acoustic baseline (reads the audio again).")
    ] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Linear probes on the stored embeddings, with grouped splits and a leakage audit.

    Writes report.json, report.md and ROC, confusion-matrix and reliability plots to --out.
    """
    setup_logging(verbose)
    from hear_features.probe import ProbeConfig
    from hear_features.probe import probe as run_probe

    config = ProbeConfig(
        target=target,
        group=group,
        where=tuple(where or ()),
        task=task,  # type: ignore[arg-type]  # validated by ProbeConfig
        level=level,  # type: ignore[arg-type]
        positive=positive,
        at=parse_time(at, "--at"),
        folds=folds,
        repeats=repeats,
        seed=seed,
        bootstrap=bootstrap,
        confounds=tuple(confound or ()),
        duplicate_distance=duplicate_distance,
        duplicates=duplicates,  # type: ignore[arg-type]
        acoustic=acoustic,
    )
    start = time.perf_counter()
    report = run_probe(
        repo, config, out, progress=lambda stage: err_console.print(f"[dim]{stage} ...[/]")
    )
    show(report)
    console.print(
        f"wrote {out}/report.json, report.md and {len(report.plots)} plot(s) "
        f"in {time.perf_counter() - start:.1f} s"
    )


def show(report: ProbeReport) -> None:
    """The results table and the audit's warnings, for people."""
    from rich.table import Table

    header, rows = report.table_rows()
    table = Table(title=f"linear probe: {report.headline()}", title_justify="left")
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"{len(report.units)} units in {len(set(report.groups.tolist()))} groups "
        f"({report.config.group}); model {report.model_id}; "
        "cells: mean ± std over repeats [95% CI, bootstrap over groups]",
        highlight=False,
    )
    for warning in report.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
