"""``hear-features forget`` end to end, on a copy of the shared workflow repository:
every selector, byte scans of the data folder, every read path (search through the SDK
and Feast, online reads, training sets at any timestamp, the probe's selection, the
explorer's map), ``feast materialize`` afterwards, tombstones and the audit log, and a
materialisation running at the same time as a forget."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from typer.testing import CliRunner

from hear_features.cli import app
from hear_features.errors import ConfigError, UnknownClipError
from hear_features.featurestore.audit import AuditLog
from hear_features.featurestore.forget import Selector, forget
from hear_features.featurestore.online.store import HearOnlineStore
from hear_features.featurestore.repo import open_store
from hear_features.featurestore.search import similar_clips
from hear_features.featurestore.training import training_set
from hear_features.probe.selection import from_store
from tests.conftest import FEAST, T1, Workflow, end_time, feast, hear_cli, noise, register
from tests.support.erasure import Traces, forget_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(workflow: Workflow, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow repository (registered at T1..T3, relabelled, materialised),
    applied again so that its registry points at its own tables."""
    target = tmp_path_factory.mktemp("forget") / "repo"
    shutil.copytree(workflow.repo, target)
    (target / "forget-audit.jsonl").unlink(missing_ok=True)
    feast(target, "apply")
    return target


def rows(repo: Path, table: str) -> list[dict]:
    return pq.read_table(repo / "data" / f"{table}.parquet").to_pylist()


def clips_of(repo: Path, **where: str) -> set[str]:
    return {
        r["clip_id"]
        for r in rows(repo, "registrations")
        if all(r.get(k) == v for k, v in where.items())
    }


def traces_of(repo: Path, clip_ids: set[str]) -> Traces:
    """What must not survive: vectors, clip and recording ids, paths, subject ids."""
    mine = [r for r in rows(repo, "registrations") if r["clip_id"] in clip_ids]
    strings = {r[c] for r in mine for c in ("recording_id", "audio_uri", "content_hash")}
    return Traces.of(repo / "data" / "embeddings.parquet", clip_ids, strings)


def vectors_of(repo: Path, clip_ids: set[str]) -> np.ndarray:
    return np.asarray(
        [r["embedding"] for r in rows(repo, "embeddings") if r["clip_id"] in clip_ids], np.float32
    )


def write_noise(folder: Path, n: int, seed: int) -> Path:
    """``n`` distinct 6 s noise recordings (loud enough to keep every window)."""
    folder.mkdir(parents=True)
    for i in range(n):
        sf.write(folder / f"n{i}.wav", noise(6.0, 16_000, amplitude=0.3, seed=seed + i), 16_000)
    return folder


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", "-shm"))  # -shm: readers change it
    }


def audit_log(repo: Path) -> list[dict]:
    return [json.loads(line) for line in (repo / "forget-audit.jsonl").read_text().splitlines()]


def assert_never_returned(repo: Path, gone: set[str], queries: np.ndarray) -> None:
    """No read path of the repository returns a clip of ``gone``."""
    store = open_store(repo)
    kept = {r["clip_id"] for r in rows(repo, "embeddings")} - gone
    for query in queries:
        hits = similar_clips(store, query, k=100)
        assert {h["clip_id"] for h in hits} == kept  # every stored clip but the forgotten
        docs = store.retrieve_online_documents_v2(
            features=["cough_embeddings:label"], query=query.tolist(), top_k=100
        ).to_dict()
        assert set(docs["clip_id"]) == kept
    online = store.get_online_features(
        features=["cough_embeddings:embedding", "clip_metadata:audio_uri"],
        entity_rows=[{"clip_id": c} for c in sorted(gone)],
    ).to_dict()
    assert online["embedding"] == [None] * len(gone)
    assert online["audio_uri"] == [None] * len(gone)
    for at in (T1 + dt.timedelta(days=1), dt.datetime.now(dt.UTC)):  # before the forget too
        with pytest.raises(UnknownClipError, match="forgotten"):
            training_set(store, pd.DataFrame({"clip_id": sorted(gone), "event_timestamp": at}))
    some = sorted(kept)[:2]
    frame = training_set(store, pd.DataFrame({"clip_id": some, "event_timestamp": at}))
    assert frame["embedding"].notna().all()
    assert not set(from_store(store).frame["clip_id"]) & gone
    view = store.get_feature_view("cough_embeddings")
    snapshot = HearOnlineStore().vector_snapshot(store.config, view)
    assert set(snapshot.entity_ids) == kept  # the explorer's map


def test_forgetting_a_subject_leaves_nothing_behind(repo: Path, workflow: Workflow) -> None:
    gone = clips_of(repo, subject_id="subject-0")
    history = [r for r in rows(repo, "registrations") if r["clip_id"] in gone]
    assert len(history) > len(gone)  # the relabelled cough has two versions
    traces = traces_of(repo, gone)
    traces.needles[b"subject-0"] = "the subject id"
    queries = vectors_of(repo, gone)
    assert traces.scan(repo / "data")  # the scan sees them before
    before = folder_digest(repo / "data")

    dry = hear_cli("forget", "--repo", str(repo), "--subject", "subject-0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{len(gone)} clip(s) of 3 recording(s) would be removed" in dry.stdout
    assert "online view cough_embeddings" in dry.stdout
    assert folder_digest(repo / "data") == before  # a dry run changes nothing

    done = hear_cli("forget", "--repo", str(repo), "--subject", "subject-0", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"forgot {len(gone)} clip(s) of 3 recording(s) ({len(history)} registration" in (
        done.stdout
    )
    assert traces.scan(repo / "data") == []
    assert_never_returned(repo, gone, queries)

    # feast materialize over the whole history brings nothing back.
    start = (T1 - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    feast(repo, "materialize", start, end_time())
    assert_never_returned(repo, gone, queries[:1])

    (entry,) = audit_log(repo)
    assert entry["event"] == "forget" and list(entry["selector"]) == ["subject_id"]
    assert b"subject-0" not in (repo / "forget-audit.jsonl").read_bytes()  # not in clear
    assert AuditLog(repo).find("subject_id", "subject-0") == [entry]
    assert AuditLog(repo).find("subject_id", "subject-1") == []
    assert entry["counts"]["clips"] == len(gone) and entry["who"]
    assert entry["counts"]["registration_rows"] == len(history)

    # The same audio is refused, naming the record, and re-admitted with the flag.
    again = hear_cli("register", str(workflow.corpus / "manifest.csv"), "--repo", str(repo))
    assert again.returncode == 1
    assert f"was forgotten (forget record {entry['id']})" in again.stderr
    assert not clips_of(repo) & gone
    cough = str(Path(workflow.changed).name)
    readmit = repo.parent / "readmit.csv"
    readmit.write_text(f"path,label,subject_id\n{workflow.corpus / cough},cough,subject-0\n")
    back = hear_cli("register", str(readmit), "--repo", str(repo), "--allow-forgotten")
    assert back.returncode == 0, back.stderr
    assert f"re-admitted 1 recording(s) forgotten by {entry['id']}" in back.stdout
    returned = clips_of(repo, subject_id="subject-0")
    assert returned and returned <= gone
    readmitted = audit_log(repo)[-1]
    assert readmitted["event"] == "readmit" and readmitted["id"] == entry["id"]
    feast(repo, "materialize-incremental", end_time())
    hits = similar_clips(open_store(repo), vectors_of(repo, returned)[0], k=1)
    assert hits[0]["clip_id"] in returned


def test_each_selector_and_a_selection_file(repo: Path, tmp_path: Path) -> None:
    store = open_store(repo)
    recordings: dict[str, set[str]] = {}
    for r in rows(repo, "registrations"):
        if r["subject_id"] == "subject-1":
            recordings.setdefault(r["recording_id"], set()).add(r["clip_id"])
    pair = next(c for c in recordings.values() if len(c) > 1)
    one, other = sorted(pair)
    report = forget(store, Selector.of(clip_id=[one, "no-such-clip"]))
    assert report.plan.clip_ids == [one] and report.plan.unmatched == {"clip_id": ["no-such-clip"]}
    assert one not in clips_of(repo) and other in clips_of(repo)  # one window of a recording

    recording = next(r for r, c in recordings.items() if one not in c)
    forget(store, Selector.of(recording_id=[recording]))
    assert not recordings[recording] & clips_of(repo)

    late = clips_of(repo, subject_id="subject-9")
    selection = tmp_path / "withdrawn.csv"
    selection.write_text("subject_id\nsubject-9\n")
    report = forget(store, Selector.from_file(selection))
    assert set(report.plan.clip_ids) == late and not late & clips_of(repo)

    pilot = write_noise(tmp_path / "pilot", 1, seed=99)
    register(repo, str(pilot), "--dataset", "pilot-study")  # registered, not materialised
    assert clips_of(repo, dataset="pilot-study")
    forget(store, Selector.of(dataset=["pilot-study"]))
    assert not clips_of(repo, dataset="pilot-study")

    before = folder_digest(repo / "data")
    with pytest.raises(UnknownClipError, match="nothing to forget"):
        forget(store, Selector.of(subject_id=["nobody"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("label\ncough\n")
    with pytest.raises(ConfigError, match="a selection file holds only"):
        Selector.from_file(bad)
    assert folder_digest(repo / "data") == before


def test_an_online_only_clip_goes_from_its_view(repo: Path) -> None:
    """A clip written with ``write_to_online_store`` (never registered) is found by id."""
    store = open_store(repo)
    pushed = pd.DataFrame(
        {
            "clip_id": ["pushed-only"],
            "audio": [noise(2.0, 16_000, seed=7).tolist()],
            "sample_rate": [16_000],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")],
        }
    )
    store.write_to_online_store("hear_embedding_on_write", pushed)
    read = {
        "features": ["hear_embedding_on_write:model_id"],
        "entity_rows": [{"clip_id": "pushed-only"}],
    }
    assert store.get_online_features(**read).to_dict()["model_id"] != [None]
    report = forget(store, Selector.of(clip_id=["pushed-only"]))
    assert report.plan.counts["online_rows"]["hear_embedding_on_write"] == 1
    assert store.get_online_features(**read).to_dict()["model_id"] == [None]


def test_a_materialisation_and_a_forget_at_once_both_finish(repo: Path, tmp_path: Path) -> None:
    """A forget of clips that a concurrent ``feast materialize`` is embedding: whichever
    takes the locks first, both finish and the clips are nowhere afterwards."""
    audio = write_noise(tmp_path / "new", 3, seed=50)
    register(repo, str(audio), "--subject", "subject-new")
    new = clips_of(repo, subject_id="subject-new")
    env = {k: v for k, v in os.environ.items() if k != "HEAR_MODEL"}
    materialize = subprocess.Popen(
        [str(FEAST), "materialize-incremental", end_time()],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    forgetting = subprocess.Popen(
        forget_command(repo, "--subject", "subject-new"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    outputs = [p.communicate(timeout=600)[0] for p in (materialize, forgetting)]
    assert [materialize.returncode, forgetting.returncode] == [0, 0], outputs
    assert not new & clips_of(repo)
    assert not new & {r["clip_id"] for r in rows(repo, "embeddings")}
    store = open_store(repo)
    view = store.get_feature_view("cough_embeddings")
    online = HearOnlineStore()
    assert not new & set(online.vector_snapshot(store.config, view).entity_ids)
    # The stores agree: every registered clip has its vector online and in the index.
    registered = clips_of(repo)
    assert {r["clip_id"] for r in rows(repo, "embeddings")} == registered
    assert set(online.vector_snapshot(store.config, view).entity_ids) == registered
    assert online.refresh(store.config, view) == len(registered)


def test_the_readme_forget_commands_run(repo: Path, tmp_path: Path) -> None:
    """Every ``hear-features forget`` line of the README's "Deleting data", as a dry run
    on this repository (its example ids swapped for stored ones), through the typer app
    in this process. (No byte scan here: reading the database's file in a process that
    holds a SQLite connection to it drops that connection's POSIX locks.)"""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Deleting data", 1)[1].split("\n## ", 1)[0]
    commands = [
        line.split("#", 1)[0].split()
        for line in section.splitlines()
        if line.startswith("hear-features forget ")
    ]
    assert len(commands) >= 5
    stored = rows(repo, "registrations")[-1]
    swap = {
        "subject-0042": stored["subject_id"],
        "3f2a9c0e1b7d4a55": stored["recording_id"],
        "3f2a9c0e1b7d4a55-00001800": stored["clip_id"],
        "withdrawn.csv": str(tmp_path / "withdrawn.csv"),
    }
    (tmp_path / "withdrawn.csv").write_text(f"subject_id\n{stored['subject_id']}\n")
    for command in commands:
        args = [swap.get(a, a) for a in command[1:] if a not in ("--yes", "--dry-run")]
        result = CliRunner().invoke(app, [*args, "--dry-run", "--repo", str(repo)])
        assert result.exit_code == 0, (command, result.output)
        assert "would be removed" in result.output, (command, result.output)
