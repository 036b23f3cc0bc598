"""The whole Feast workflow with the real `feast` CLI in a subprocess, in temp repositories.

register -> feast apply -> feast materialize -> online and historical reads, the
on-demand transformations, the model guard and the recovery of rows stranded offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from hear_features.audio import SAMPLE_RATE, clip_from_samples, windows_at
from hear_features.encoders import HearEncoder, build_standin
from hear_features.featurestore.repo import open_store, tables
from tests.conftest import (
    NOW,
    T1,
    T2,
    T3,
    Workflow,
    end_time,
    feast,
    hear_cli,
    iso,
    make_repo,
    noise,
    register,
    state,
)
from tests.support.training_frames import assert_same, both_ways

pytestmark = pytest.mark.slow


def registrations(repo: Path) -> pa.Table:
    return pq.read_table(repo / "data" / "registrations.parquet")


def test_materialize_embeds_each_clip_once(workflow: Workflow) -> None:
    reg = registrations(workflow.repo)
    clips = len(set(reg["clip_id"].to_pylist()))
    assert reg.num_rows > clips  # the relabelled clip has two registrations
    st = state(workflow.repo)
    assert st["embedded_total"] == clips
    assert st["last_run"]["embedded"] == 0
    assert st["last_run"]["already_stored"] == reg.num_rows
    assert f"embedded {clips} clips" in workflow.first
    assert f"reused {reg.num_rows - clips}" in workflow.first
    assert "embedded 0 clips" in workflow.second
    emb = pq.read_table(workflow.repo / "data" / "embeddings.parquet")
    assert emb.num_rows == reg.num_rows
    assert set(emb["model_id"].to_pylist()) == {"hear-features/standin@v1-seed0"}


def test_online_vector_equals_offline_and_a_direct_encoder_call(
    workflow: Workflow, encoder: HearEncoder
) -> None:
    store = open_store(workflow.repo)
    emb = pq.read_table(workflow.repo / "data" / "embeddings.parquet").to_pylist()
    row = next(r for r in emb if r["offset_s"] > 0)  # a window that is not the first
    online = store.get_online_features(
        features=["cough_embeddings:embedding", "cough_embeddings:model_id"],
        entity_rows=[{"clip_id": row["clip_id"]}],
    ).to_dict()
    window = next(windows_at(row["audio_uri"], [round(row["offset_s"] * SAMPLE_RATE)]))
    direct = encoder.encode(window.samples[None, :])[0]
    np.testing.assert_allclose(online["embedding"][0], row["embedding"], atol=1e-6)
    np.testing.assert_allclose(row["embedding"], direct, atol=1e-5)
    assert online["model_id"] == [encoder.model_id]


def test_historical_reads_are_point_in_time_correct(workflow: Workflow) -> None:
    store = open_store(workflow.repo)
    reg = registrations(workflow.repo).to_pylist()
    changed = next(
        r["clip_id"] for r in reg if r["audio_uri"] == str(Path(workflow.changed).resolve())
    )
    late = next(r["clip_id"] for r in reg if r["audio_uri"] == str(workflow.late.resolve()))
    day = dt.timedelta(days=1)
    rows = [
        (changed, T1 - day),  # before anything was registered
        (changed, T1 + day),  # first version
        (changed, T2 + day),  # relabelled
        (late, T2 + day),  # not registered yet
        (late, T3 + day),
    ]
    entities = pd.DataFrame(
        {"clip_id": [c for c, _ in rows], "event_timestamp": [t for _, t in rows]}
    )
    from hear_features.featurestore.training import training_set

    frame = training_set(store, entities)
    assert frame["clip_id"].tolist() == [c for c, _ in rows]  # input order kept
    assert frame["label"].tolist()[1:3] == ["cough", "cough-wet"]
    present = frame["embedding"].notna().tolist()
    assert present == [False, True, True, False, True]
    assert len(frame["embedding"].iloc[4]) == 512


def test_request_time_audio_is_embedded_on_read(workflow: Workflow, encoder: HearEncoder) -> None:
    store = open_store(workflow.repo)
    samples = noise(1.5, 22_050, seed=11)
    out = store.get_online_features(
        features=["hear_embedding:embedding", "hear_embedding:model_id"],
        entity_rows=[{"clip_id": "not-stored", "audio": samples.tolist(), "sample_rate": 22_050}],
    ).to_dict()
    expected = encoder.encode(clip_from_samples(samples, 22_050)[None, :])[0]
    np.testing.assert_allclose(out["embedding"][0], expected, atol=1e-5)
    assert out["model_id"] == [encoder.model_id]


def test_request_audio_that_is_too_long_is_refused(workflow: Workflow) -> None:
    store = open_store(workflow.repo)
    with pytest.raises(Exception, match=r"is 3.00 s long; one clip is at most 2 s"):
        store.get_online_features(
            features=["hear_embedding:embedding"],
            entity_rows=[
                {"clip_id": "x", "audio": noise(3, 16_000).tolist(), "sample_rate": 16_000}
            ],
        )


def test_writing_a_new_clip_transforms_it_on_write(
    workflow: Workflow, encoder: HearEncoder
) -> None:
    store = open_store(workflow.repo)
    samples = noise(2.0, 16_000, seed=12)
    frame = pd.DataFrame(
        {
            "clip_id": ["pushed-clip"],
            "audio": [samples.tolist()],
            "sample_rate": [16_000],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")],
        }
    )
    store.write_to_online_store("hear_embedding_on_write", frame)
    out = store.get_online_features(
        features=["hear_embedding_on_write:embedding", "hear_embedding_on_write:model_id"],
        entity_rows=[{"clip_id": "pushed-clip"}],
    ).to_dict()
    expected = encoder.encode(clip_from_samples(samples, 16_000)[None, :])[0]  # DC removed
    np.testing.assert_allclose(out["embedding"][0], expected, atol=1e-5)
    assert out["model_id"] == [encoder.model_id]


def test_duckdb_sql_over_the_offline_parquet(workflow: Workflow) -> None:
    path = workflow.repo / "data" / "embeddings.parquet"
    counts = dict(
        duckdb.execute(
            f"SELECT label, count(DISTINCT clip_id) FROM read_parquet('{path}') GROUP BY label"
        ).fetchall()
    )
    reg = registrations(workflow.repo).to_pandas()
    expected = reg.groupby("label")["clip_id"].nunique().to_dict()
    assert counts == expected
    dims = duckdb.execute(f"SELECT DISTINCT len(embedding) FROM read_parquet('{path}')").fetchall()
    assert dims == [(512,)]


def test_training_set_cli_keeps_order_and_given_labels(workflow: Workflow, tmp_path: Path) -> None:
    reg = registrations(workflow.repo).to_pylist()
    ids = [r["clip_id"] for r in reg][:4][::-1]
    entities = tmp_path / "entities.csv"
    pd.DataFrame({"clip_id": ids, "event_timestamp": [iso(NOW)] * 4, "label": ["mine"] * 4}).to_csv(
        entities, index=False
    )
    out = tmp_path / "train.parquet"
    proc = hear_cli("training-set", str(entities), "--out", str(out), "--repo", str(workflow.repo))
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table["clip_id"].to_pylist() == ids
    assert table["given_label"].to_pylist() == ["mine"] * 4
    assert None not in table["label"].to_pylist()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())


def test_training_set_and_more_like_write_csv_and_jsonl_by_ending(
    workflow: Workflow, tmp_path: Path
) -> None:
    reg = registrations(workflow.repo).to_pylist()
    ids = [r["clip_id"] for r in reg][:3]
    entities = tmp_path / "entities.csv"
    pd.DataFrame({"clip_id": ids, "event_timestamp": [iso(NOW)] * 3}).to_csv(entities, index=False)
    repo = ["--repo", str(workflow.repo)]
    for ending in (".parquet", ".csv", ".jsonl"):
        proc = hear_cli("training-set", str(entities), "-o", str(tmp_path / f"t{ending}"), *repo)
        assert proc.returncode == 0, proc.stderr
    want = pq.read_table(tmp_path / "t.parquet").to_pandas()
    csv = pd.read_csv(tmp_path / "t.csv")
    jsonl = pd.read_json(tmp_path / "t.jsonl", lines=True, dtype=False, convert_dates=False)
    for got, vectors in ((csv, csv["embedding"].map(json.loads)), (jsonl, jsonl["embedding"])):
        assert got["clip_id"].tolist() == ids
        assert got["label"].tolist() == want["label"].tolist()
        stacked = np.stack([np.asarray(v, np.float32) for v in vectors])
        np.testing.assert_array_equal(stacked, np.stack(want["embedding"]))
    bad = hear_cli("more-like", ids[0], "-o", str(tmp_path / "m.xlsx"), *repo)
    assert bad.returncode == 2
    assert "ending '.xlsx'" in bad.stderr and not (tmp_path / "m.xlsx").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("clip_id\nabc\n", "lacks column(s) event_timestamp"),
        (
            "clip_id,event_timestamp\nabc,yesterday-ish\n",
            "row 1: event_timestamp 'yesterday-ish' is not an ISO 8601",
        ),
        ("clip_id,event_timestamp\n", "has no rows"),
    ],
)
def test_training_set_cli_refuses_bad_entity_files(
    workflow: Workflow, tmp_path: Path, content: str, message: str
) -> None:
    entities = tmp_path / "e.csv"
    entities.write_text(content)
    proc = hear_cli(
        "training-set",
        str(entities),
        "-o",
        str(tmp_path / "o.parquet"),
        "--repo",
        str(workflow.repo),
    )
    assert proc.returncode == 1
    assert message in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


def test_more_like_these_returns_neighbours_with_provenance(
    workflow: Workflow, tmp_path: Path
) -> None:
    reg = registrations(workflow.repo).to_pylist()
    seed = next(r["clip_id"] for r in reg if r["label"] == "speech")
    out = tmp_path / "more.parquet"
    proc = hear_cli("more-like", seed, "-k", "3", "-o", str(out), "--repo", str(workflow.repo))
    assert proc.returncode == 0, proc.stderr
    frame = pq.read_table(out).to_pandas()
    assert len(frame) == 3 and seed not in frame["clip_id"].tolist()
    assert frame["seed_id"].tolist() == [seed] * 3
    assert frame["rank"].tolist() == [1, 2, 3]
    assert list(frame["distance"]) == sorted(frame["distance"])
    assert frame["embedding"].map(len).tolist() == [512] * 3
    # distance is cosine distance to the seed's stored vector
    emb = {
        r["clip_id"]: np.asarray(r["embedding"])
        for r in pq.read_table(workflow.repo / "data" / "embeddings.parquet").to_pylist()
    }
    a, b = emb[seed], emb[frame["clip_id"].iloc[0]]
    assert frame["distance"].iloc[0] == pytest.approx(
        1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5
    )


def test_more_like_these_lists_each_clip_once_under_its_nearest_seed(
    workflow: Workflow, tmp_path: Path
) -> None:
    """Overlapping seeds: every clip is one row, under the seed it is nearest to, with its
    rank among that seed's own neighbours (checked against an exact search over the
    stored vectors); a seed left without rows is named, and a filter that keeps nothing
    writes an empty training set with the same columns."""
    from hear_features.featurestore.training import more_like_these

    store = open_store(workflow.repo)
    emb = (
        pq.read_table(tables(store).embeddings).to_pandas().drop_duplicates("clip_id", keep="last")
    )
    vectors = {
        c: np.asarray(v) / np.linalg.norm(v)
        for c, v in zip(emb.clip_id, emb.embedding, strict=True)
    }
    clips = sorted(vectors)
    seeds = clips[:3]
    others = [c for c in clips if c not in seeds]

    def exact_order(seed: str) -> list[str]:
        return sorted(others, key=lambda c: 1 - vectors[seed] @ vectors[c])

    frame = more_like_these(store, seed_ids=seeds, k=len(others))
    assert frame.attrs["seed_ids"] == seeds
    assert sorted(frame["clip_id"]) == others  # each other clip once, no seed
    for row in frame.itertuples():
        mine = 1 - vectors[row.seed_id] @ vectors[row.clip_id]
        assert row.distance == pytest.approx(mine, abs=1e-5)
        assert all(mine <= 1 - vectors[s] @ vectors[row.clip_id] + 1e-6 for s in seeds)
        assert row.rank == exact_order(row.seed_id).index(row.clip_id) + 1
    assert list(frame["distance"]) == sorted(frame["distance"])

    # k = 1 and more seeds than other clips: some seed cannot have a row; the CLI says which.
    many = clips[: len(clips) - 2]
    out = tmp_path / "few.parquet"
    proc = hear_cli("more-like", *many, "-k", "1", "-o", str(out), "--repo", str(workflow.repo))
    assert proc.returncode == 0, proc.stderr
    written = pq.read_table(out).to_pandas()
    assert len(written) <= 2 and set(written["clip_id"]) <= set(clips[-2:])
    assert f"for {written['seed_id'].nunique()} of {len(many)} seed(s)" in proc.stdout
    assert "seed(s) without rows of their own" in proc.stderr
    missing = [s for s in many if s not in set(written["seed_id"])]
    assert missing and missing[0] in proc.stderr

    # A filter that keeps nothing: an empty file with the training set's columns, rc 0.
    empty_out = tmp_path / "none.parquet"
    proc = hear_cli(
        "more-like",
        seeds[0],
        "--where",
        "label = no-such-label",
        "-o",
        str(empty_out),
        "--repo",
        str(workflow.repo),
    )
    assert proc.returncode == 0, proc.stderr
    assert "no neighbour" in proc.stderr
    nothing = pq.read_table(empty_out)
    assert nothing.num_rows == 0
    assert nothing.column_names == pq.read_table(out).column_names


@pytest.mark.parametrize(
    "when",
    [T1 - dt.timedelta(days=1), T1, T2 + dt.timedelta(hours=1), T3, NOW + dt.timedelta(days=1)],
    ids=["before-any", "at-T1", "after-relabel", "at-late", "future"],
)
def test_rows_at_one_time_match_feast_on_the_workflow(
    workflow: Workflow, when: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(workflow.repo)
    ids = pq.read_table(tables(store).embeddings, columns=["clip_id"])["clip_id"].to_pylist()
    ids = sorted(set(ids))
    # In another time zone than UTC, and a column of the caller's own.
    stamp = pd.Timestamp(when).tz_convert("Asia/Kolkata")
    entities = pd.DataFrame(
        {"clip_id": ids, "event_timestamp": [stamp] * len(ids), "fold": range(len(ids))}
    )
    fast, slow = both_ways(store, entities, monkeypatch)
    assert_same(fast, slow)
    if when < T1:
        assert fast["embedding"].isna().all()
    else:
        assert fast["embedding"].notna().any()


def test_more_like_these_with_an_audio_seed_and_unknown_ids(
    workflow: Workflow, tmp_path: Path
) -> None:
    out = tmp_path / "more.parquet"
    proc = hear_cli(
        "more-like",
        "--audio",
        str(workflow.late),
        "-k",
        "2",
        "-o",
        str(out),
        "--repo",
        str(workflow.repo),
    )
    assert proc.returncode == 0, proc.stderr
    frame = pq.read_table(out).to_pandas()
    assert frame["seed_id"].str.startswith("late_cough.wav@").all()
    # The late cough itself is stored, so it is its own nearest neighbour.
    assert frame.sort_values("distance")["distance"].iloc[0] == pytest.approx(0, abs=1e-5)
    bad = hear_cli("more-like", "no-such-clip", "-o", str(out), "--repo", str(workflow.repo))
    assert bad.returncode == 1 and "unknown clip id(s): no-such-clip" in bad.stderr


# ---- registration -------------------------------------------------------------------


def test_a_copied_repository_never_writes_into_the_original(
    workflow: Workflow, tmp_path: Path
) -> None:
    """A copied folder keeps the original's registry, whose views name the original's
    tables: commands refuse (naming both folders and the fix) until ``feast apply`` has
    been run in the copy, and then read and write the copy's own tables."""
    copy = tmp_path / "copy"
    shutil.copytree(workflow.repo, copy, ignore=shutil.ignore_patterns("*.lock"))
    original = workflow.repo / "data" / "registrations.parquet"
    before = hashlib.sha256(original.read_bytes()).hexdigest()
    audio = tmp_path / "new.wav"
    sf.write(audio, noise(2.0, 16_000, seed=11), 16_000)

    refused = hear_cli("register", str(audio), "--repo", str(copy), "--label", "cough")
    assert refused.returncode == 1
    assert "another feature repository" in refused.stderr
    assert str(workflow.repo.resolve()) in refused.stderr and "feast apply" in refused.stderr
    assert hashlib.sha256(original.read_bytes()).hexdigest() == before

    feast(copy, "apply")
    proc = hear_cli("register", str(audio), "--repo", str(copy), "--label", "cough")
    assert proc.returncode == 0, proc.stderr
    assert str(copy / "data" / "registrations.parquet") in proc.stdout
    assert hashlib.sha256(original.read_bytes()).hexdigest() == before
    assert (
        len(pq.read_table(copy / "data" / "registrations.parquet"))
        == len(pq.read_table(original)) + 1
    )


def test_register_is_idempotent_and_reports_bad_files(tmp_path: Path, standin_dir: Path) -> None:
    repo = make_repo(tmp_path / "repo", standin_dir)
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "a.wav", noise(4.0, 16_000), 16_000)
    sf.write(folder / "b.flac", noise(1.0, 44_100, seed=1), 44_100)
    (folder / "c.mp3").write_bytes(b"")
    proc = hear_cli("register", str(folder), "--repo", str(repo), "--label", "cough")
    assert proc.returncode == 1
    assert "registered 4 new clip(s) from 2 recording(s)" in proc.stdout  # 3 + 1 windows
    assert "c.mp3: is empty (0 bytes)" in proc.stderr
    table = repo / "data" / "registrations.parquet"
    digest = hashlib.sha256(table.read_bytes()).hexdigest()

    again = hear_cli(
        "register",
        str(folder / "a.wav"),
        str(folder / "b.flac"),
        "--repo",
        str(repo),
        "--label",
        "cough",
    )
    assert again.returncode == 0
    assert "registered 0 new clip(s) from 2 recording(s) (4 already registered)" in again.stdout
    assert hashlib.sha256(table.read_bytes()).hexdigest() == digest

    relabel = hear_cli("register", str(folder / "b.flac"), "--repo", str(repo), "--label", "breath")
    assert "registered 1 new clip(s)" in relabel.stdout
    rows = pq.read_table(table).to_pylist()
    assert len(rows) == 5 and {r["label"] for r in rows} == {"cough", "breath"}
    assert all(r["event_timestamp"].tzinfo is not None for r in rows)
    assert pq.read_schema(table).field("event_timestamp").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("file,label\na.wav,cough\n", "has no 'path' column (columns: file, label)"),
        (
            "path,label\na.wav,cough\na.wav,breath\n",
            "row 3: a.wav is listed twice with different metadata",
        ),
        (
            "path,event_timestamp\na.wav,31/31/2020\n",
            "row 2: event_timestamp '31/31/2020' is not an ISO 8601",
        ),
    ],
)
def test_bad_manifests_are_refused_before_anything_is_written(
    tmp_path: Path, standin_dir: Path, manifest: str, message: str
) -> None:
    repo = make_repo(tmp_path / "repo", standin_dir)
    sf.write(tmp_path / "a.wav", noise(1.0, 16_000), 16_000)
    (tmp_path / "m.csv").write_text(manifest)
    proc = hear_cli("register", str(tmp_path / "m.csv"), "--repo", str(repo))
    assert proc.returncode == 1
    assert message in " ".join(proc.stderr.split())
    assert not (repo / "data" / "registrations.parquet").exists()


# ---- guards and recovery --------------------------------------------------------------


def _small_repo(tmp_path: Path, model: Path, timestamp: dt.datetime) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo", model)
    audio = tmp_path / "one.wav"
    sf.write(audio, noise(3.0, 16_000, seed=5), 16_000)
    register(repo, str(audio), "--label", "cough", "--timestamp", iso(timestamp))
    feast(repo, "apply")
    return repo, audio


def test_a_different_model_is_refused_and_nothing_is_touched(
    tmp_path: Path, standin_dir: Path
) -> None:
    repo, _ = _small_repo(tmp_path, standin_dir, NOW - dt.timedelta(hours=2))
    feast(repo, "materialize-incremental", end_time())
    other = build_standin(tmp_path / "seed1", seed=1)
    config = (repo / "feature_store.yaml").read_text().replace(str(standin_dir), str(other))
    (repo / "feature_store.yaml").write_text(config)
    extra = tmp_path / "two.wav"
    sf.write(extra, noise(2.0, 16_000, seed=6), 16_000)
    register(repo, str(extra), "--label", "breath")
    table = repo / "data" / "embeddings.parquet"
    before = hashlib.sha256(table.read_bytes()).hexdigest()

    proc = feast(repo, "materialize-incremental", end_time(), check=False)

    assert proc.returncode != 0
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "holds vectors of hear-features/standin@v1-seed0" in text
    assert "configured encoder is hear-features/standin@v1-seed1" in text
    assert hashlib.sha256(table.read_bytes()).hexdigest() == before


def test_rows_stranded_offline_by_a_failed_online_write_reach_online_later(
    tmp_path: Path, standin_dir: Path
) -> None:
    repo, _ = _small_repo(tmp_path, standin_dir, NOW - dt.timedelta(days=2))
    config = repo / "feature_store.yaml"
    good = config.read_text()
    # An index factory these few clips cannot train: the online write refuses after
    # the offline append (the store checks it before writing anything online).
    config.write_text(
        good.replace("online_store:\n", "online_store:\n  index: {factory: 'IVF64,Flat'}\n")
    )

    failed = feast(
        repo, "materialize-incremental", end_time(), "--views", "cough_embeddings", check=False
    )
    assert failed.returncode != 0 and "cannot be trained" in failed.stderr, failed.stderr
    emb = pq.read_table(repo / "data" / "embeddings.parquet")
    assert emb.num_rows > 0  # embedded and stored offline before the failure

    config.write_text(good)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    retry = feast(repo, "materialize", start, end_time())  # a window that starts after the rows
    assert "embedded 0 clips" in retry.stdout
    store = open_store(repo)
    ids = emb["clip_id"].to_pylist()
    out = store.get_online_features(
        ["cough_embeddings:embedding"], [{"clip_id": c} for c in ids]
    ).to_dict()
    assert all(v is not None and len(v) == 512 for v in out["embedding"])


def test_a_registration_dated_before_the_last_run_still_goes_online(
    tmp_path: Path, standin_dir: Path
) -> None:
    repo, _ = _small_repo(tmp_path, standin_dir, NOW - dt.timedelta(hours=3))
    feast(repo, "materialize-incremental", end_time())
    old = tmp_path / "old.wav"
    sf.write(old, noise(1.0, 16_000, seed=8), 16_000)
    register(repo, str(old), "--label", "old", "--timestamp", iso(NOW - dt.timedelta(days=400)))
    feast(repo, "materialize-incremental", end_time())
    store = open_store(repo)
    reg = registrations(repo).to_pylist()
    old_id = next(r["clip_id"] for r in reg if r["label"] == "old")
    out = store.get_online_features(["cough_embeddings:label"], [{"clip_id": old_id}]).to_dict()
    assert out["label"] == ["old"]


def test_a_refused_recording_goes_online_in_no_view_and_the_others_in_every_view(
    tmp_path: Path, standin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever order Feast lists the views in, the embeddings view runs first: a
    recording it refuses (changed since registered) reaches neither view online, the
    clips of the same run that were fine reach both, and the run fails naming it.
    (The `feast` CLI for the failing run; the SDK's call for the later ones.)"""
    repo, _ = _small_repo(tmp_path, standin_dir, NOW - dt.timedelta(hours=2))
    fine, changed = tmp_path / "fine.wav", tmp_path / "changed.wav"
    sf.write(fine, noise(2.0, 16_000, seed=11), 16_000)
    sf.write(changed, noise(2.0, 16_000, seed=12), 16_000)
    register(repo, str(fine), "--label", "fine")
    register(repo, str(changed), "--label", "changed")
    sf.write(changed, noise(2.0, 16_000, seed=13), 16_000)  # after registration

    failed = feast(repo, "materialize-incremental", end_time(), check=False)

    text = " ".join((failed.stdout + failed.stderr).split())
    assert failed.returncode != 0
    assert f"{changed}: changed since it was registered" in text, text
    ids = {r["label"]: r["clip_id"] for r in registrations(repo).to_pylist()}
    features = ["clip_metadata:label", "cough_embeddings:embedding"]
    store = open_store(repo)

    def online(label: str) -> tuple[object, object]:
        row = store.get_online_features(features, [{"clip_id": ids[label]}]).to_dict()
        return row["label"][0], row["embedding"][0]

    label, vector = online("fine")
    assert label == "fine" and vector is not None and len(vector) == 512
    assert online("changed") == (None, None)

    # Registered again, as the message says: the old registration is superseded (the
    # file no longer holds its audio), neither embedded nor sent online, nor an error.
    register(repo, str(changed), "--label", "changed")
    old_id = ids["changed"]
    ids = {r["label"]: r["clip_id"] for r in registrations(repo).to_pylist()}
    capsys.readouterr()
    store.materialize_incremental(end_date=dt.datetime.now(dt.UTC))
    again = capsys.readouterr().out
    assert "embedded 1 clips" in again and "superseded 1" in again, again
    label, vector = online("changed")
    assert label == "changed" and vector is not None and len(vector) == 512
    ids["old"] = old_id
    assert online("old") == (None, None)

    # Put back as it was at first, and registered again: that audio is the file's now.
    sf.write(changed, noise(2.0, 16_000, seed=12), 16_000)
    register(repo, str(changed), "--label", "changed")
    store.materialize_incremental(end_date=dt.datetime.now(dt.UTC))
    ids["back"] = old_id
    label, vector = online("back")
    assert label == "changed" and vector is not None and len(vector) == 512
