"""The steps of ``hear-features demo``: the main job end to end on a synthetic corpus.

register -> ``feast apply`` -> ``feast materialize`` -> online read -> training set ->
similar clips -> one query to the HTTP API -> a linear probe, each step printed. The
stock ``feast`` CLI runs in a subprocess, exactly as a user would run it; the demo works
in a copy of the feature repository so the project's own ``feature_repo/`` stays clean.
The HTTP step starts the real app under uvicorn on 127.0.0.1 for one request (with the
standard library's HTTP client: the demo needs nothing the product does not).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import uvicorn
import yaml
from feast import FeatureStore
from feast.filter_models import ComparisonFilter
from rich.table import Table

from hear_features.api.main import create_app
from hear_features.api.settings import ApiSettings
from hear_features.cli.common import console
from hear_features.defaults import DEFAULT_MODEL, STANDIN, model_from_env
from hear_features.encoders.resolve import hub_model
from hear_features.errors import DemoError, ModelError
from hear_features.featurestore import runtime
from hear_features.featurestore.config import EncoderSettings, find_repo
from hear_features.featurestore.registration import recordings_from_inputs, register
from hear_features.featurestore.repo import open_store, tables, views
from hear_features.featurestore.search import similar_clips
from hear_features.featurestore.training import latest_embeddings, training_set
from hear_features.schema import EMBEDDING_DIM
from hear_features.synthetic import write_corpus


def pick_demo_model(explicit: str | None) -> str:
    """--model, else $HEAR_MODEL, else google/hear if already cached, else the stand-in.

    The demo never downloads the (gated, large) real weights by itself.
    """
    if explicit:
        return explicit
    env = model_from_env()
    if env:
        return env
    try:
        hub_model(DEFAULT_MODEL, offline=True)
    except ModelError:
        return STANDIN
    return DEFAULT_MODEL


def run(workdir: Path, repo: Path | None, model: str | None, subjects: int, per_label: int) -> None:
    """Every step of the demo, printed as it goes."""
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
    console.rule("[bold]10. the HTTP API (the app under uvicorn, on 127.0.0.1)")
    query_api(demo_repo, next(i.path for i in items if i.label == "cough"))
    console.rule("[bold]11. linear probe (hear-features probe)")
    show_probe(store, workdir / "probe", subjects)


def show_probe(store: FeatureStore, out: Path, subjects: int) -> None:
    """How well a linear probe on the embeddings predicts the label, subjects held out."""
    from hear_features.cli.probe import show
    from hear_features.probe import ProbeConfig, probe

    if subjects < 2:
        console.print("skipped: a probe with subjects held out needs at least 2 subjects")
        return
    folds = min(5, subjects)
    console.print(
        f"hear-features probe --target label --folds {folds} --out {out}", highlight=False
    )
    show(probe(store, ProbeConfig(target="label", folds=folds), out))
    console.print(f"report: {out / 'report.md'}", highlight=False)


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
    names = views(store)
    features = [
        f"{names.embeddings}:embedding",
        f"{names.embeddings}:model_id",
        f"{names.registrations}:label",
        f"{names.registrations}:subject_id",
    ]
    online = store.get_online_features(
        features=features, entity_rows=[{"clip_id": c} for c in sample]
    ).to_dict()
    view = Table("clip_id", "label", "subject", f"embedding ({EMBEDDING_DIM} floats)")
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
    """One query per label through Feast's own vector search, a filtered query, and the
    leave-one-out label agreement of the nearest stored neighbour (``similar_clips``)."""
    ids, matrix, _ = latest_embeddings(tables(store))
    labels = store.get_online_features(
        features=[f"{views(store).registrations}:label"],
        entity_rows=[{"clip_id": c} for c in ids],
    ).to_dict()["label"]
    for label in sorted(set(labels)):
        q = labels.index(label)
        hits = [h for h in feast_search(store, matrix[q], 4) if h["clip_id"] != ids[q]][:3]
        show_hits(f"query {ids[q]} ({label})", hits)
    cough = labels.index("cough")
    only_breath = ComparisonFilter(type="eq", key="label", value="breath")
    show_hits(
        f"query {ids[cough]} (cough), filtered to label = breath",
        feast_search(store, matrix[cough], 3, filters=only_breath),
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


def feast_search(
    store: FeatureStore, vector: Any, k: int, filters: ComparisonFilter | None = None
) -> list[dict[str, Any]]:
    """Feast's ``retrieve_online_documents_v2``, hits nearest first (Feast returns them in
    entity-key order, each with its own distance)."""
    view = views(store).embeddings
    reply = store.retrieve_online_documents_v2(
        features=[f"{view}:label", f"{view}:subject_id"],
        query=[float(x) for x in vector],
        top_k=k,
        filters=filters,
    ).to_dict()
    hits = [dict(zip(reply, row, strict=True)) for row in zip(*reply.values(), strict=True)]
    return sorted(hits, key=lambda hit: hit["distance"])


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
    with _server(repo) as url:
        console.print(
            f"curl -F file=@{audio.name} -F k=3 -F aggregation=recording {url}/v1/search/audio"
        )
        body = _post_audio(f"{url}/v1/search/audio", audio, {"k": "3", "aggregation": "recording"})
    view = Table(
        title=f"recordings most like {audio.name} (model {body['model_id']})",
        title_justify="left",
    )
    for col in ("rank", "recording_id", "label", "dataset", "distance"):
        view.add_column(col)
    for rank, match in enumerate(body["recordings"], 1):
        view.add_row(
            str(rank),
            match["recording_id"],
            str(match.get("label")),
            str(match.get("dataset")),
            f"{match['distance']:.4f}",
        )
    console.print(view)
    console.print(
        "Without an API key the service answers as the read role: subject ids and paths "
        "are left out (README: Security)."
    )


class _server:
    """The app under uvicorn on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, repo: Path) -> None:
        app = create_app(ApiSettings(repo=repo, load_encoder=True))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the HTTP service did not start (see the log above)")
            time.sleep(0.1)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _post_audio(url: str, audio: Path, fields: dict[str, str]) -> dict[str, Any]:
    """POST a multipart form with one file; the JSON answer (DemoError on an error status)."""
    body, content_type = multipart("file", audio.name, audio.read_bytes(), fields)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return dict(json.loads(reply.read()))
    except urllib.error.HTTPError as exc:
        raise DemoError(f"the API answered {exc.code}: {exc.read().decode()[:500]}") from exc


def multipart(field: str, filename: str, data: bytes, extra: dict[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one file and some plain fields, and its
    content type (the standard library has no builder for it)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in extra.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
