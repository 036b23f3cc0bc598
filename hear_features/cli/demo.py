"""``hear-features demo``: the main job end to end on a synthetic corpus."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
import typer
from rich.table import Table

from hear_features.cli.common import console, reports_errors, setup_logging
from hear_features.embedding import embed_recordings
from hear_features.embeddings_file import write_embeddings
from hear_features.encoders import DEFAULT_REPO, MODEL_ENV, STANDIN, HearEncoder
from hear_features.encoders.resolve import hub_model
from hear_features.errors import ModelError
from hear_features.similarity import cosine_top_k
from hear_features.synthetic import write_corpus


def pick_demo_model(explicit: str | None) -> str:
    """--model, else $HEAR_MODEL, else google/hear if already cached, else the stand-in.

    The demo never downloads the (gated, large) real weights by itself.
    """
    if explicit:
        return explicit
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    try:
        hub_model(DEFAULT_REPO, offline=True)
    except ModelError:
        return STANDIN
    return DEFAULT_REPO


@reports_errors
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes its corpus and tables.")
    ] = Path("demo-output"),
    model: Annotated[
        str | None,
        typer.Option(help="Encoder (default: $HEAR_MODEL, cached google/hear, else standin)."),
    ] = None,
    subjects: Annotated[int, typer.Option(min=1, max=20)] = 3,
    per_label: Annotated[int, typer.Option(min=1, max=20)] = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Synthesise a labelled corpus, embed it and show its nearest neighbours."""
    setup_logging(verbose)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)

    console.rule("[bold]1. encoder")
    encoder = HearEncoder.load(pick_demo_model(model))
    console.print(f"using {encoder.describe()}", highlight=False)

    console.rule("[bold]2. synthetic corpus")
    items = write_corpus(workdir / "audio", subjects=subjects, per_label=per_label)
    formats = ", ".join(
        f"{n} {ext}" for ext, n in sorted(Counter(i.path.suffix for i in items).items())
    )
    where = workdir / "audio"
    console.print(
        f"{len(items)} recordings ({formats}) of {subjects} synthetic subjects in {where}"
    )

    console.rule("[bold]3. embed")
    out = workdir / "embeddings.parquet"
    rows, failures = write_embeddings(
        embed_recordings([i.path for i in items], encoder), out, encoder.model_id
    )
    if failures:
        raise SystemExit(f"demo corpus failed to embed: {failures[0].error}")
    console.print(f"{rows} clips of 2 s -> {out} (model_id {encoder.model_id})", highlight=False)

    console.rule("[bold]4. nearest neighbours (exact cosine)")
    show_neighbours(out, {str(i.path.resolve()): (i.label, i.subject_id) for i in items})


def show_neighbours(table_path: Path, truth: dict[str, tuple[str, str]]) -> None:
    """Print a query per label with its top 3 neighbours, and leave-one-out agreement."""
    table = pq.read_table(table_path)
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    uris = table.column("audio_uri").to_pylist()
    clip_ids = table.column("clip_id").to_pylist()
    labels = np.array([truth[u][0] for u in uris])
    subjects = np.array([truth[u][1] for u in uris])

    idx, sims = cosine_top_k(vectors, vectors, 3, exclude_self=True)
    for label in sorted(set(labels)):
        q = int(np.flatnonzero(labels == label)[0])
        view = Table(title=f"query {clip_ids[q]} ({label}, {subjects[q]})", title_justify="left")
        for col in ("rank", "clip_id", "label", "subject", "cosine"):
            view.add_column(col)
        for rank, (j, s) in enumerate(zip(idx[q], sims[q], strict=True), 1):
            view.add_row(str(rank), clip_ids[j], labels[j], subjects[j], f"{s:.3f}")
        console.print(view)
    agree = float(np.mean(labels[idx[:, 0]] == labels))
    console.print(
        f"leave-one-out nearest neighbour has the same label for {agree:.0%} of {len(labels)} clips"
    )
