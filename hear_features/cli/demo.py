"""``hear-features demo``: the main job end to end on a synthetic corpus.

register -> ``feast apply`` -> ``feast materialize`` -> online read -> training set ->
similar clips -> one query to the HTTP API, each step printed. The stock ``feast`` CLI
runs in a subprocess, exactly as a user would run it; the demo works in a copy of the
feature repository so the project's own ``feature_repo/`` stays clean.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import duckdb
import httpx
import pandas as pd
import typer
import yaml
from feast import FeatureStore
from feast.filter_models import ComparisonFilter
from rich.table import Table

from hear_features.api.launch import launch, stop
from hear_features.cli.common import console, reports_errors, setup_logging
from hear_features.encoders import DEFAULT_REPO, MODEL_ENV, STANDIN
from hear_features.encoders.resolve import hub_model
from hear_features.errors import HearFeaturesError, ModelError
from hear_features.featurestore import runtime
from hear_features.featurestore.registration import recordings_from_inputs, register
from hear_features.featurestore.repo import find_repo, open_store, tables
from hear_features.featurestore.search import similar_clips
from hear_features.featurestore.settings import EncoderSettings
from hear_features.featurestore.training import latest_embeddings, training_set
from hear_features.synthetic import write_corpus


class DemoError(HearFeaturesError):
    """A step of the demo failed; the message carries the step's own output."""


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
        Path, typer.Option(help="Where the demo writes its corpus and stores.")
    ] = Path("demo-output"),
    repo: Annotated[
        Path | None, typer.Option(help="Feature repository to copy (default: ./feature_repo).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Encoder (default: $HEAR_MODEL, cached google/hear, else standin)."),
    ] = None,
    subjects: Annotated[int, typer.Option(min=1, max=20)] = 3,
    per_label: Annotated[int, typer.Option(min=1, max=20)] = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the whole workflow on a synthetic labelled corpus and show what it found."""
    setup_logging(verbose)
    source_repo = find_repo(repo)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    chosen = pick_demo_model(model)

    console.rule("[bold]1. synthetic corpus")
    items = write_corpus(workdir / "audio", subjects=subjects, per_label=per_label)
    formats = ", ".join(
        f"{n} {ext}" for ext, n in sorted(Counter(i.path.suffix for i in items).items())
    )
    console.print(f"{len(items)} recordings ({formats}) of {subjects} synthetic subjects")

    console.rule("[bold]2. feature repository")
    demo_repo = copy_repo(source_repo, workdir / "feature_repo", chosen)
    console.print(f"{demo_repo} (copy of {source_repo}, batch_engine.model: {chosen})")

    console.rule("[bold]3. hear-features register")
    store = open_store(demo_repo)
    recordings, problems = recordings_from_inputs([str(workdir / "audio" / "manifest.csv")], {})
    report = register(recordings, tables(store).registrations)
    console.print(
        f"registered {report.added} clips from {report.recordings} recordings "
        f"({len(problems) + len(report.problems)} problems)"
    )

    console.rule("[bold]4. feast apply")
    run_feast(["apply"], demo_repo)
    console.rule("[bold]5. feast materialize-incremental")
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    run_feast(["materialize-incremental", end], demo_repo)

    store = open_store(demo_repo)
    encoder = runtime.encoder_for(EncoderSettings.from_repo_config(store.config))
    console.print(f"encoder: {encoder.describe()}", highlight=False)

    console.rule("[bold]6. online read (get_online_features)")
    show_online_read(store)
    console.rule("[bold]7. training set (get_historical_features)")
    show_training_set(store, workdir)
    console.rule("[bold]8. DuckDB over the offline Parquet")
    show_duckdb(tables(store).embeddings)
    console.rule("[bold]9. similar clips (retrieve_online_documents_v2, FAISS)")
    show_neighbours(store)
    console.rule("[bold]10. the HTTP API (hear-features serve)")
    query_api(demo_repo, next(i.path for i in items if i.label == "cough"))


def copy_repo(source: Path, target: Path, model: str) -> Path:
    """Copy the repository's config and definitions, with the demo's encoder configured."""
    target.mkdir(parents=True)
    for path in source.glob("*.py"):
        shutil.copy2(path, target / path.name)
    config = yaml.safe_load((source / "feature_store.yaml").read_text())
    config.setdefault("batch_engine", {})["model"] = model
    (target / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def run_feast(args: list[str], repo: Path) -> None:
    """Run the stock ``feast`` CLI of this environment in ``repo`` and echo its output."""
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run([str(feast), *args], cwd=repo, capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).replace("\r", "\n")
    lines = [
        line for line in dict.fromkeys(text.splitlines()) if line.strip() and not _is_noise(line)
    ]
    for line in lines:
        console.print(f"  {line}", highlight=False, markup=False)
    if proc.returncode != 0:
        raise DemoError(f"`feast {' '.join(args)}` failed with exit code {proc.returncode}")


def _is_noise(line: str) -> bool:
    """TensorFlow start-up chatter, third-party warnings and progress bars."""
    noise = (
        "oneDNN",
        "absl::InitializeLog",
        "Warning",
        "fetch_arrow_table",
        "warnings.warn",
        "%|",
        "INFO:faiss",
    )
    return any(n in line for n in noise) or line.lstrip().startswith("meta = ")


def show_online_read(store: FeatureStore) -> None:
    ids, _, _ = latest_embeddings(tables(store))
    sample = ids[:3]
    features = [
        "cough_embeddings:embedding",
        "cough_embeddings:model_id",
        "clip_metadata:label",
        "clip_metadata:subject_id",
    ]
    online = store.get_online_features(
        features=features, entity_rows=[{"clip_id": c} for c in sample]
    ).to_dict()
    view = Table("clip_id", "label", "subject", "embedding (512 floats)")
    for i, clip in enumerate(sample):
        head = ", ".join(f"{v:+.2f}" for v in online["embedding"][i][:3])
        view.add_row(clip, online["label"][i], online["subject_id"][i], f"[{head}, ...]")
    console.print(view)
    console.print(f"model_id: {online['model_id'][0]}", highlight=False)


def show_training_set(store: FeatureStore, workdir: Path) -> None:
    ids, _, _ = latest_embeddings(tables(store))
    now = pd.Timestamp.now(tz="UTC")
    entities = pd.DataFrame({"clip_id": ids, "event_timestamp": [now] * len(ids)})
    before = pd.DataFrame(
        {"clip_id": ids[:5], "event_timestamp": [now - pd.Timedelta(days=365)] * 5}
    )
    frame = training_set(store, pd.concat([entities, before], ignore_index=True))
    out = workdir / "training_set.parquet"
    frame.to_parquet(out)
    has = frame["embedding"].notna()
    console.print(
        f"{len(frame)} rows -> {out}: {int(has.sum())} with an embedding; "
        f"the 5 rows asked for a year ago have {int(has.iloc[len(ids) :].sum())} "
        "(the clips were not registered yet)"
    )
    counts = frame[has]["label"].value_counts().to_dict()
    console.print(
        f"labels: {counts}; embedding dimension {len(frame.loc[has, 'embedding'].iloc[0])}"
    )


def show_duckdb(embeddings: Path) -> None:
    query = (
        "SELECT label, count(*) AS clips, count(DISTINCT subject_id) AS subjects, "
        "round(avg(len(embedding)), 0) AS dim "
        f"FROM read_parquet('{embeddings}') GROUP BY label ORDER BY label"
    )
    console.print(query, highlight=False, markup=False)
    console.print(duckdb.execute(query).df().to_string(index=False))


def show_neighbours(store: FeatureStore) -> None:
    """One query per label through Feast's vector search, a filtered query, and the
    leave-one-out label agreement of the nearest stored neighbour."""
    ids, matrix, _ = latest_embeddings(tables(store))
    labels = store.get_online_features(
        features=["clip_metadata:label"], entity_rows=[{"clip_id": c} for c in ids]
    ).to_dict()["label"]
    for label in sorted(set(labels)):
        q = labels.index(label)
        hits = [h for h in similar_clips(store, matrix[q], 4) if h["clip_id"] != ids[q]][:3]
        show_hits(f"query {ids[q]} ({label})", hits)
    cough = labels.index("cough")
    only_breath = ComparisonFilter(type="eq", key="label", value="breath")
    show_hits(
        f"query {ids[cough]} (cough), filtered to label = breath",
        similar_clips(store, matrix[cough], 3, filters=only_breath),
    )
    agree = sum(
        labels[
            ids.index(next(h for h in similar_clips(store, v, 2) if h["clip_id"] != c)["clip_id"])
        ]
        == lab
        for c, v, lab in zip(ids, matrix, labels, strict=True)
    )
    console.print(
        f"leave-one-out: the nearest stored neighbour has the same label for "
        f"{agree / len(ids):.0%} of {len(ids)} clips"
    )


def show_hits(title: str, hits: list[dict[str, object]]) -> None:
    view = Table(title=title, title_justify="left")
    for col in ("rank", "clip_id", "label", "subject", "distance"):
        view.add_column(col)
    for rank, hit in enumerate(hits, 1):
        view.add_row(
            str(rank),
            str(hit["clip_id"]),
            str(hit["label"]),
            str(hit["subject_id"]),
            f"{hit['distance']:.4f}",
        )
    console.print(view)


def query_api(repo: Path, audio: Path) -> None:
    """Start the service briefly, send one recording over HTTP, print the answer."""
    server, url = launch(repo)
    try:
        console.print(
            f"curl -F file=@{audio.name} -F k=3 -F aggregation=recording {url}/v1/search/audio"
        )
        with audio.open("rb") as f:
            reply = httpx.post(
                f"{url}/v1/search/audio",
                files={"file": (audio.name, f)},
                data={"k": "3", "aggregation": "recording"},
                timeout=60,
            )
        if reply.status_code != 200:
            raise DemoError(f"the API answered {reply.status_code}: {reply.text}")
        body = reply.json()
        view = Table(
            title=f"recordings most like {audio.name} (model {body['model_id']})",
            title_justify="left",
        )
        for col in ("rank", "recording_id", "label", "subject", "distance", "audio"):
            view.add_column(col)
        for rank, match in enumerate(body["recordings"], 1):
            view.add_row(
                str(rank),
                match["recording_id"],
                str(match["label"]),
                str(match["subject_id"]),
                f"{match['distance']:.4f}",
                Path(match["audio_uri"] or "").name,
            )
        console.print(view)
    finally:
        stop(server)
