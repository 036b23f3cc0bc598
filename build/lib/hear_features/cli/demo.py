"""``hear-features demo``: the main job end to end on a synthetic corpus (the steps are in
:mod:`hear_features.cli.walkthrough`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hear_features.cli.common import VerboseOpt, reports_errors, setup_logging
from hear_features.defaults import DEFAULT_MODEL, MODEL_ENV


@reports_errors
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes its corpus and stores.")
    ] = Path("demo-output"),
    repo: Annotated[
        Path | None, typer.Option(help="Feature repository to copy (default: ./feature_repo).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Encoder (default: ${MODEL_ENV}, cached {DEFAULT_MODEL}, else standin)."
        ),
    ] = None,
    subjects: Annotated[
        int, typer.Option(min=1, max=20, help="Synthetic subjects (speakers) in the corpus.")
    ] = 3,
    per_label: Annotated[
        int,
        typer.Option(
            min=1, max=20, help="Recordings per subject and label (cough, breath, speech)."
        ),
    ] = 3,
    verbose: VerboseOpt = False,
) -> None:
    """Run the whole workflow on a synthetic labelled corpus and show what it found."""
    from hear_features.cli import walkthrough

    setup_logging(verbose)
    walkthrough.run(workdir, repo, model, subjects, per_label)
