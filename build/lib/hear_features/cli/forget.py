"""``hear-features forget``: delete clips from every store, for good."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hear_features.cli.common import (
    RepoOpt,
    VerboseOpt,
    console,
    err_console,
    reports_errors,
    setup_logging,
)

if TYPE_CHECKING:
    from hear_features.featurestore.forget import ForgetPlan

IdsOpt = list[str] | None


@reports_errors
def forget(
    clip: Annotated[IdsOpt, typer.Option("--clip", help="A clip id (repeatable).")] = None,
    recording: Annotated[
        IdsOpt, typer.Option("--recording", help="A recording id: all its clips (repeatable).")
    ] = None,
    subject: Annotated[
        IdsOpt, typer.Option("--subject", help="A subject id: all their clips (repeatable).")
    ] = None,
    dataset: Annotated[
        IdsOpt, typer.Option("--dataset", help="A dataset name: all its clips (repeatable).")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A CSV or Parquet file with clip_id, recording_id, subject_id and/or "
            "dataset columns; every value in it selects.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be removed; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    timings: Annotated[
        bool, typer.Option(help="Print the seconds of each step as a JSON line at the end.")
    ] = False,
    repo: RepoOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Delete clips, with every version of their rows, from the registration and
    embeddings tables, the online store, the FAISS index files and the caches.

    The audio is remembered only as a content hash, so `register` refuses it again
    (`register --allow-forgotten` re-admits it); the audit log (forget-audit.jsonl in the
    repository) records who forgot what, when. An interrupted forget is completed by the
    next forget, register or materialisation.
    """
    from hear_features.featurestore.forget import Selector
    from hear_features.featurestore.forget import forget as forget_clips
    from hear_features.featurestore.repo import open_store

    setup_logging(verbose)
    selector = Selector.of(
        clip_id=clip, recording_id=recording, subject_id=subject, dataset=dataset
    )
    if from_file is not None:
        selector = selector.merged(Selector.from_file(from_file))
    if not selector:
        raise typer.BadParameter("give --clip, --recording, --subject, --dataset or --from")
    store = open_store(repo)
    if dry_run or not yes:
        planned = forget_clips(store, selector, dry_run=True)
        _show(planned.plan, "would be removed" if dry_run else "will be removed")
        if dry_run:
            return
        if not planned.plan.clip_ids:
            err_console.print("[bold red]error:[/] nothing to forget: no stored clip matches")
            raise typer.Exit(1)
        typer.confirm("Delete these clips for good?", abort=True)
    report = forget_clips(store, selector)
    for forget_id in report.resumed:
        console.print(f"completed the interrupted forget {forget_id}", highlight=False)
    plan = report.plan
    if plan.clip_ids:
        _warn_unmatched(plan)
        counts = plan.counts
        console.print(
            f"forgot {counts['clips']} clip(s) of {counts['recordings']} recording(s) "
            f"({counts['registration_rows']} registration and {counts['embedding_rows']} "
            f"embedding rows) as forget record {plan.forget_id}; logged in forget-audit.jsonl",
            highlight=False,
        )
    if timings:
        print(json.dumps({"clips": len(plan.clip_ids), "seconds": report.seconds}))


def _show(plan: ForgetPlan, what: str) -> None:
    from rich.table import Table

    counts = plan.counts
    table = Table(title=f"{counts['clips']} clip(s) of {counts['recordings']} recording(s) {what}")
    table.add_column("where")
    table.add_column("rows", justify="right")
    table.add_row("registration table", str(counts["registration_rows"]))
    table.add_row("embeddings table", str(counts["embedding_rows"]))
    for view, rows in counts["online_rows"].items():
        table.add_row(f"online view {view}", str(rows))
    for view, vectors in counts["index_vectors"].items():
        table.add_row(f"index of {view} (vectors)", str(vectors))
    table.add_row("tombstones kept (content hashes)", str(len(plan.tombstones)))
    console.print(table)
    _warn_unmatched(plan)


def _warn_unmatched(plan: ForgetPlan) -> None:
    for column, values in plan.unmatched.items():
        err_console.print(
            f"[yellow]warning:[/] no stored clip has {column} {', '.join(values[:10])}",
            highlight=False,
        )
