"""Study metadata end to end, and old registrations online.

One repository is taken through a study's life with the real ``hear-features`` and
``feast`` commands (module fixture :func:`study`):

A. two recordings registered 400 days back (older than Feast's first window with
   ``ttl`` 0), applied and materialised, before any study column exists;
B. study columns declared in ``feature_store.yaml`` (gender, covid, smoker, age) and
   ``feast apply`` run again: the tables gain the columns, null in the old rows;
C. a manifest with those columns registered (one old recording again, with the same
   timestamp: corrected in place; four new ones, one of them dated 400 days back) and
   materialised;
D. the online database removed: ``feast materialize`` refuses in one line, changing
   nothing; ``feast apply`` and ``feast materialize`` bring every row back online.

The tests read what each step left: the offline tables (DuckDB), the online store
(Feast's SDK), searches and their filters (SDK, CLI, HTTP API), training sets and the
probe's selection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from feast.filter_models import ComparisonFilter, CompoundFilter

from hear_features.errors import ConfigError, FilterError, InputShapeError
from hear_features.featurestore.registration import read_manifest
from hear_features.featurestore.repo import open_store
from hear_features.featurestore.search import clip_search, similar_clips
from hear_features.featurestore.training import training_set
from hear_features.study import StudyColumns, infer_type
from hear_features.synthetic import SyntheticItem, write_corpus
from tests.conftest import end_time, feast, hear_cli, iso, make_repo, register
from tests.support.launch import launch, stop

pytestmark = pytest.mark.slow

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OLD = NOW - dt.timedelta(days=400)
RECENT = NOW - dt.timedelta(days=1)
DECLARED = {"gender": "string", "covid": "bool", "smoker": "bool", "age": "int64"}
BUILT_IN = ("label", "subject_id", "dataset", "device")
#: (gender, covid, smoker, age) as a manifest writes them, for items 0 and 2..5.
VALUES = {
    0: ("f", "yes", "1", "30"),
    2: ("m", "no", "0", "41"),
    3: ("f", "", "true", "52"),
    4: ("m", "true", "false", "63"),
    5: ("f", "false", "", ""),
}
TYPED = {
    0: ("f", True, True, 30),
    2: ("m", False, False, 41),
    3: ("f", None, True, 52),
    4: ("m", True, False, 63),
    5: ("f", False, None, None),
}


@dataclass
class Study:
    repo: Path
    items: list[SyntheticItem]
    clips: dict[int, list[str]]  # item index -> its clip ids
    runs: dict[str, subprocess.CompletedProcess[str]]
    before_refusal: dict[str, str]  # file -> sha256, before the refused materialize
    after_refusal: dict[str, str]


def _manifest(path: Path, items: list[SyntheticItem], rows: dict[int, tuple[str, ...]]) -> Path:
    header = ["path", *BUILT_IN, "event_timestamp", *(DECLARED if rows[min(rows)] else ())]
    lines = [",".join(header)]
    for i, extra in rows.items():
        item = items[i]
        when = iso(OLD if i in (0, 1, 2) else RECENT)
        built_in = [item.label, item.subject_id, "synthetic", "simulated"]
        lines.append(",".join([str(item.path), *built_in, when, *extra]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _digests(repo: Path) -> dict[str, str]:
    data = repo / "data"
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.glob("*.parquet*"))
        if not p.name.endswith(".lock")
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, standin_dir: Path) -> Study:
    root = tmp_path_factory.mktemp("study")
    items = write_corpus(root / "corpus", subjects=2, per_label=1, seed=11)
    repo = make_repo(root / "repo", standin_dir)
    runs: dict[str, subprocess.CompletedProcess[str]] = {}

    # A. before any study column: two recordings from 400 days ago.
    register(repo, str(_manifest(root / "old.csv", items, {0: (), 1: ()})))
    runs["apply_a"] = feast(repo, "apply")
    runs["materialize_a"] = feast(repo, "materialize-incremental", end_time())

    # B. the study's columns, declared once; apply gives the tables their columns.
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"]["study_columns"] = DECLARED
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    runs["apply_b"] = feast(repo, "apply")

    # C. the study manifest: item 0 again (same timestamp, now with values), 2..5 new.
    register(repo, str(_manifest(root / "study.csv", items, VALUES)))
    runs["materialize_c"] = feast(repo, "materialize-incremental", end_time())

    # D. the online database removed.
    for path in (repo / "data").glob("online.db*"):
        path.unlink()
    before = _digests(repo)
    runs["refused"] = feast(repo, "materialize-incremental", end_time(), check=False)
    after = _digests(repo)
    runs["apply_d"] = feast(repo, "apply")
    runs["materialize_d"] = feast(repo, "materialize-incremental", end_time())

    reg = pq.read_table(repo / "data" / "registrations.parquet").to_pandas()
    clips = {
        i: sorted(set(reg.loc[reg["audio_uri"].str.endswith(item.path.name), "clip_id"]))
        for i, item in enumerate(items)
    }
    return Study(repo, items, clips, runs, before, after)


def _sql(repo: Path, query: str) -> list[tuple]:
    table = {
        "reg": f"read_parquet('{repo / 'data' / 'registrations.parquet'}')",
        "emb": f"read_parquet('{repo / 'data' / 'embeddings.parquet'}')",
    }
    return duckdb.sql(query.format(**table)).fetchall()


# ---- offline ------------------------------------------------------------------------------


def test_study_columns_are_stored_offline_with_their_declared_types(study: Study) -> None:
    for table in ("reg", "emb"):
        types = {row[0]: row[1] for row in _sql(study.repo, f"DESCRIBE SELECT * FROM {{{table}}}")}
        assert {name: types[name] for name in DECLARED} == {
            "gender": "VARCHAR",
            "covid": "BOOLEAN",
            "smoker": "BOOLEAN",
            "age": "BIGINT",
        }
    for i, expected in TYPED.items():
        for clip in study.clips[i]:
            newest = _sql(
                study.repo,
                "SELECT gender, covid, smoker, age FROM {emb} "
                f"WHERE clip_id = '{clip}' ORDER BY created DESC LIMIT 1",
            )
            assert newest == [expected], (i, clip)


def test_rows_from_before_the_declaration_hold_null(study: Study) -> None:
    # Item 1 was registered before the columns existed and never again.
    for table in ("reg", "emb"):
        rows = _sql(
            study.repo,
            f"SELECT gender, covid, smoker, age, label FROM {{{table}}} "
            f"WHERE clip_id IN ({','.join(repr(c) for c in study.clips[1])})",
        )
        assert rows and all(r[:4] == (None, None, None, None) and r[4] for r in rows)


def test_a_registration_corrected_in_place_gets_a_new_embeddings_row(study: Study) -> None:
    # Item 0: registered in A, then again in C with the same timestamp and study values.
    for clip in study.clips[0]:
        rows = _sql(
            study.repo,
            f"SELECT event_timestamp, age FROM {{emb}} WHERE clip_id = '{clip}' ORDER BY created",
        )
        assert [age for _, age in rows] == [None, 30]
        assert rows[0][0] == rows[1][0] == OLD


# ---- online -------------------------------------------------------------------------------


def test_old_registrations_reach_clip_metadata_online(study: Study) -> None:
    # Items 1 and 2 are dated 400 days back (ttl 0: Feast's first window starts a year
    # ago); item 2 was registered after the first materialisation had moved on.
    store = open_store(study.repo)
    clips = [*study.clips[1], *study.clips[2]]
    online = store.get_online_features(
        features=["clip_metadata:label", "clip_metadata:age", "clip_metadata:covid"],
        entity_rows=[{"clip_id": c} for c in clips],
    ).to_dict()
    expected_labels = [study.items[1].label] * len(study.clips[1]) + [study.items[2].label] * len(
        study.clips[2]
    )
    assert online["label"] == expected_labels
    assert online["age"] == [None] * len(study.clips[1]) + [41] * len(study.clips[2])
    assert online["covid"] == [None] * len(study.clips[1]) + [False] * len(study.clips[2])


def test_a_removed_online_database_is_refused_in_one_line_and_nothing_changes(
    study: Study,
) -> None:
    refused = study.runs["refused"]
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "run `feast apply`" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr and "OperationalError" not in refused.stderr
    assert study.after_refusal == study.before_refusal


def test_after_apply_every_row_goes_online_again(study: Study) -> None:
    out = study.runs["materialize_d"].stdout
    all_clips = sum(len(c) for c in study.clips.values())
    assert f"clip_metadata: {all_clips} rows written online" in out
    assert f"{all_clips} rows written online" in out.split("cough_embeddings:")[1].splitlines()[0]
    store = open_store(study.repo)
    assert clip_search(store).refresh() == all_clips


def test_an_index_the_data_cannot_train_is_refused_before_anything_goes_online(
    study: Study, tmp_path: Path
) -> None:
    # A copy of the study's repository with its online side removed, and an index
    # factory that 10 vectors cannot train (64 lists need 64 * 39 points).
    repo = tmp_path / "repo"
    shutil.copytree(
        study.repo,
        repo,
        ignore=shutil.ignore_patterns("online.db*", "index", "*.state.json", "*.lock"),
    )
    _set_index(repo, {"factory": "IVF64,Flat"})
    feast(repo, "apply")
    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    with pytest.raises(ConfigError, match=r"'IVF64,Flat' cannot be trained on 10 vectors"):
        open_store(repo).materialize_incremental(end)
    online = sqlite3.connect(repo / "data" / "online.db")
    assert online.execute('SELECT COUNT(*) FROM "hear_features_cough_embeddings"').fetchone() == (
        0,
    )
    assert not list((repo / "data" / "index").glob("*/*"))

    _set_index(repo, {"factory": "auto"})  # the fix: every row goes online, indexed
    done = feast(repo, "materialize-incremental", end_time())
    clips = sum(len(c) for c in study.clips.values())
    assert f"{clips} rows written online" in done.stdout.split("cough_embeddings:")[1]
    count = online.execute('SELECT COUNT(*) FROM "hear_features_cough_embeddings"').fetchone()
    assert count == (clips,) and list((repo / "data" / "index").glob("*/*"))


def _set_index(repo: Path, index: dict[str, object]) -> None:
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"]["index"] = index
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


# ---- searches -----------------------------------------------------------------------------


def _truth(study: Study, keep: object) -> set[str]:
    """The clips whose (typed) study values satisfy ``keep``."""
    return {
        clip
        for i, values in TYPED.items()
        if keep(dict(zip(DECLARED, values, strict=True)))  # type: ignore[operator]
        for clip in study.clips[i]
    }


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (ComparisonFilter(type="eq", key="gender", value="f"), lambda v: v["gender"] == "f"),
        (ComparisonFilter(type="gte", key="age", value=50), lambda v: (v["age"] or 0) >= 50),
        (ComparisonFilter(type="lt", key="age", value="45"), lambda v: 0 < (v["age"] or 99) < 45),
        (ComparisonFilter(type="eq", key="covid", value=True), lambda v: v["covid"] is True),
        (ComparisonFilter(type="eq", key="smoker", value="false"), lambda v: v["smoker"] is False),
        (
            ComparisonFilter(type="in", key="age", value=[30, "63"]),
            lambda v: v["age"] in (30, 63),
        ),
        (
            CompoundFilter(
                type="and",
                filters=[
                    ComparisonFilter(type="eq", key="gender", value="m"),
                    ComparisonFilter(type="eq", key="covid", value="yes"),
                ],
            ),
            lambda v: v["gender"] == "m" and v["covid"] is True,
        ),
    ],
)
def test_sdk_search_filters_on_study_columns(study: Study, filters: object, keep: object) -> None:
    store = open_store(study.repo)
    query = clip_search(store).vectors_of([study.clips[2][0]])[0]
    hits = similar_clips(store, query, 100, filters=filters)  # type: ignore[arg-type]
    assert {h["clip_id"] for h in hits} == _truth(study, keep)
    assert all(set(DECLARED) <= set(h) for h in hits)


def test_feast_retrieval_filters_on_study_columns(study: Study) -> None:
    store = open_store(study.repo)
    query = clip_search(store).vectors_of([study.clips[2][0]])[0]
    found = store.retrieve_online_documents_v2(
        features=["cough_embeddings:age", "cough_embeddings:gender"],
        query=query.tolist(),
        top_k=100,
        filters=ComparisonFilter(type="gt", key="age", value=45),
    ).to_dict()
    assert set(found["clip_id"]) == _truth(study, lambda v: (v["age"] or 0) > 45)
    assert all(age > 45 for age in found["age"])


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            ComparisonFilter(type="eq", key="gendre", value="f"),
            r"unknown filter field 'gendre'.*filterable fields: .*gender, covid, smoker, age",
        ),
        (ComparisonFilter(type="eq", key="age", value="old"), "'old' is not a finite number"),
        (ComparisonFilter(type="gt", key="gender", value="f"), "gender holds text"),
        (ComparisonFilter(type="eq", key="covid", value="maybe"), "not true or false"),
        (ComparisonFilter(type="eq", key="age", value=[1, 2]), "takes one value"),
    ],
)
def test_bad_filters_are_refused_naming_the_problem(
    study: Study, filters: ComparisonFilter, message: str
) -> None:
    store = open_store(study.repo)
    query = clip_search(store).vectors_of([study.clips[2][0]])[0]
    with pytest.raises(FilterError, match=message):
        similar_clips(store, query, 5, filters=filters)
    with pytest.raises(FilterError, match=message):  # Feast's own retrieval too
        store.retrieve_online_documents_v2(
            features=["cough_embeddings:age"], query=query.tolist(), top_k=5, filters=filters
        )


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.zeros(512), "no direction"),
        (np.full(512, 1e30), "overflows float32"),
        (np.full(512, 1e-30), "no direction"),
        (np.full(512, 1e39), "beyond float32"),
        (np.r_[np.ones(511), np.nan], "NaN or infinite"),
    ],
)
def test_query_vectors_that_cannot_be_compared_are_refused(
    study: Study, vector: np.ndarray, message: str
) -> None:
    with pytest.raises(InputShapeError, match=message):
        similar_clips(open_store(study.repo), vector, 5)


# ---- training sets, the CLI, the probe ----------------------------------------------------


def test_training_sets_carry_study_columns_as_of_each_timestamp(study: Study) -> None:
    store = open_store(study.repo)
    clip = study.clips[0][0]
    entities = pd.DataFrame(
        {"clip_id": [clip, clip, study.clips[3][0]], "event_timestamp": [OLD, NOW, NOW]}
    )
    frame = training_set(store, entities)
    assert list(frame.columns[-4:]) == list(DECLARED)
    # At OLD (and now) the newest version of item 0's registration holds the values.
    assert frame["age"].tolist() == [30, 30, 52]
    assert frame["covid"].tolist() == [True, True, None]
    kept = training_set(store, entities, where=["age >= 40", "smoker = true"])
    assert kept["clip_id"].tolist() == [study.clips[3][0]]


def test_cli_where_on_more_like_and_training_set(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "more.parquet"
    seed = study.clips[2][0]
    proc = hear_cli(
        "more-like", seed, "-k", "50", "--where", "gender = f", "--where", "age >= 40",
        "--out", str(out), "--repo", str(study.repo),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    more = pd.read_parquet(out)
    assert set(more["clip_id"]) == _truth(
        study, lambda v: v["gender"] == "f" and (v["age"] or 0) >= 40
    )
    assert set(more["gender"]) == {"f"} and (more["age"] >= 40).all()

    entities = tmp_path / "entities.csv"
    pd.DataFrame(
        {"clip_id": [c for i in TYPED for c in study.clips[i]], "event_timestamp": iso(NOW)}
    ).to_csv(entities, index=False)
    out = tmp_path / "train.csv"
    proc = hear_cli(
        "training-set", str(entities), "--where", "covid = true", "--out", str(out),
        "--repo", str(study.repo),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(pd.read_csv(out)["clip_id"]) == _truth(study, lambda v: v["covid"] is True)

    proc = hear_cli("more-like", seed, "--where", "gendre = f", "--repo", str(study.repo))
    assert proc.returncode == 1
    assert "unknown filter field 'gendre'" in proc.stderr and "Traceback" not in proc.stderr


def test_the_probe_selects_on_study_columns(study: Study) -> None:
    from hear_features.probe.selection import filtered, from_store

    selection = from_store(open_store(study.repo))
    assert set(DECLARED) <= set(selection.columns)
    older = filtered(selection, ["age >= 50"])
    assert set(older.frame["clip_id"]) == _truth(study, lambda v: (v["age"] or 0) >= 50)


# ---- the HTTP API -------------------------------------------------------------------------


ANALYST_KEY = "study-analyst-key-0123"
READER_KEY = "study-reader-key-01234"


@pytest.fixture(scope="module")
def api(study: Study) -> Iterator[str]:
    keys = study.repo / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "analysts"\nkey = "{ANALYST_KEY}"\nsee = ["metadata"]\n\n'
        f'[[keys]]\nname = "readers"\nkey = "{READER_KEY}"\n'
    )
    process, url = launch(study.repo, env={"HEAR_API_KEYS_FILE": str(keys)})
    yield url
    stop(process)


def _client(url: str, key: str = ANALYST_KEY) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": key})


def test_api_clip_look_up_shows_study_columns_to_keys_that_may_see_metadata(
    study: Study, api: str
) -> None:
    clip = study.clips[4][0]
    with _client(api) as client:
        shown = client.get(f"/v1/clips/{clip}").json()
    assert {name: shown[name] for name in DECLARED} == dict(zip(DECLARED, TYPED[4], strict=True))
    with _client(api, READER_KEY) as client:
        hidden = client.get(f"/v1/clips/{clip}")
        assert hidden.status_code == 200 and not set(DECLARED) & set(hidden.json())
        assert hidden.json()["label"] == study.items[4].label
        vector = clip_search(open_store(study.repo)).vectors_of([clip])[0].tolist()
        refused = client.post(
            "/v1/search/vector", json={"vector": vector, "k": 5, "filters": {"age": 40}}
        )
        assert refused.status_code == 403, refused.text
        assert "filtering on age" in refused.json()["error"]["message"]
        unknown = client.post(
            "/v1/search/vector", json={"vector": vector, "k": 5, "filters": {"gendre": "f"}}
        )
        message = unknown.json()["error"]["message"]  # the fields this key may filter on
        assert unknown.status_code == 422 and "gendre" in message and "label" in message
        assert not any(name in message for name in DECLARED), message


def test_api_vector_search_filters_on_study_columns(study: Study, api: str) -> None:
    store = open_store(study.repo)
    vector = clip_search(store).vectors_of([study.clips[2][0]])[0].tolist()
    with _client(api) as client:
        ok = client.post(
            "/v1/search/vector",
            json={"vector": vector, "k": 100, "filters": {"gender": "m", "age": {"gte": 40}}},
        )
        assert ok.status_code == 200, ok.text
        hits = ok.json()["results"]
        assert {h["clip_id"] for h in hits} == _truth(
            study, lambda v: v["gender"] == "m" and (v["age"] or 0) >= 40
        )
        assert all(h["gender"] == "m" and h["age"] >= 40 for h in hits)

        unknown = client.post(
            "/v1/search/vector", json={"vector": vector, "k": 5, "filters": {"gendre": "m"}}
        )
        assert unknown.status_code == 422
        message = unknown.json()["error"]["message"]
        assert "gendre" in message and "gender, covid, smoker, age" in message

        similar = client.get(
            f"/v1/clips/{study.clips[2][0]}/similar", params={"k": 50, "gender": "m", "covid": 1}
        )
        assert similar.status_code == 200, similar.text
        expected = _truth(study, lambda v: v["gender"] == "m" and v["covid"] is True)
        assert {h["clip_id"] for h in similar.json()["results"]} == expected
        unknown = client.get(f"/v1/clips/{study.clips[2][0]}/similar", params={"gendre": "m"})
        assert unknown.status_code == 422 and "gendre" in unknown.json()["error"]["message"]

        for bad in ([0.0] * 512, [1e30] * 512):
            refused = client.post("/v1/search/vector", json={"vector": bad, "k": 5})
            assert refused.status_code == 422, refused.text


def test_api_audio_search_filters_on_study_form_fields(study: Study, api: str) -> None:
    audio = study.items[2].path.read_bytes()
    with _client(api) as client:

        def search(data: dict[str, object]) -> httpx.Response:
            files = {"file": (study.items[2].path.name, audio)}
            return client.post("/v1/search/audio", files=files, data=data)

        ok = search({"k": "50", "covid": "true", "filters": '{"age": {"lt": 60}}'})
        assert ok.status_code == 200, ok.text
        hits = [h for window in ok.json()["windows"] for h in window["results"]]
        expected = _truth(study, lambda v: v["covid"] is True and 0 < (v["age"] or 99) < 60)
        assert hits and {h["clip_id"] for h in hits} == expected

        refused = search({"k": "5", "smokr": "true"})
        assert refused.status_code == 422
        assert "smokr" in refused.json()["error"]["message"]


def test_explorer_lists_study_columns_for_colour_and_filters(study: Study, api: str) -> None:
    with _client(api) as client:
        info = client.get("/v1/map/info").json()
    columns = {c["name"]: c for c in info["columns"]}
    assert set(DECLARED) <= set(columns)
    assert columns["gender"]["kind"] == "category" and columns["age"]["kind"] == "number"


# ---- declarations and manifests (no store needed) -----------------------------------------


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"label": "string"}, "clashes with the built-in column 'label'"),
        ({"Distance": "float64"}, "clashes with the built-in column 'distance'"),
        ({"given_age": "int64"}, "starts with 'given_'"),
        ({"age group": "string"}, "is not an identifier"),
        ({"age": "integer64"}, "use one of string, int64, float64, bool"),
        ({"Age": "int64", "age": "int64"}, "differ only in case"),
    ],
)
def test_bad_declarations_are_refused(declared: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        StudyColumns.declare(declared)


def test_feast_apply_refuses_a_clashing_study_column_in_one_line(
    tmp_path: Path, standin_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo", standin_dir)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"]["study_columns"] = {"subject_id": "string"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = feast(repo, "apply", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: study column 'subject_id' clashes"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo / "data" / "registry.db").exists()


def test_undeclared_manifest_columns_are_refused_with_the_declaration_to_paste(
    tmp_path: Path,
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")  # never read: the manifest is refused first
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,gender,age,covid,notes\na.wav,cough,f,41,yes,x\n")
    with pytest.raises(ConfigError) as refused:
        read_manifest(manifest, {}, study=StudyColumns.declare({"gender": "string"}))
    message = str(refused.value)
    assert "age, covid, notes" in message
    assert "study_columns:\n    age: int64\n    covid: bool\n    notes: string" in message
    assert "--ignore-column" in message
    (recording,) = read_manifest(
        manifest,
        {},
        study=StudyColumns.declare({"gender": "string", "age": "int64", "covid": "bool"}),
        ignore=["notes"],
    )
    assert recording.metadata == {
        "subject_id": None,
        "label": "cough",
        "dataset": None,
        "device": None,
        "gender": "f",
        "age": 41,
        "covid": True,
    }


@pytest.mark.parametrize(
    ("cell", "message"),
    [("forty", "is not a whole number"), ("4.5", "is not a whole number"), ("1e30", "is not a")],
)
def test_manifest_values_that_do_not_fit_their_type_name_the_row(
    tmp_path: Path, cell: str, message: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,age\na.wav,41\nb.wav,{cell}\n")
    with pytest.raises(ConfigError, match=rf"row 3: '{re.escape(cell)}' in column 'age' {message}"):
        read_manifest(manifest, {}, study=StudyColumns.declare({"age": "int64"}))


def test_words_for_missing_are_kept_in_text_columns_and_null_in_number_columns(
    tmp_path: Path,
) -> None:
    """pandas reads "None", "NaN" and "NA" as missing by default: a symptom level of
    "None" would silently become a null label. Only an empty cell is missing in a text
    column; a number or boolean column also takes NA, N/A, NaN, null and None for missing."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,subject_id,severity,age,covid\n"
        "a.wav,None,NA,None,NA,null\n"
        "b.wav,NaN,s2,,N/A,\n"
        "c.wav,,s3,mild,41,yes\n"
    )
    study = StudyColumns.declare({"severity": "string", "age": "int64", "covid": "bool"})
    a, b, c = read_manifest(manifest, {"label": "unlabelled"}, study=study)
    assert (a.metadata["label"], a.metadata["subject_id"], a.metadata["severity"]) == (
        "None",
        "NA",
        "None",
    )
    assert (a.metadata["age"], a.metadata["covid"]) == (None, None)
    assert (b.metadata["label"], b.metadata["severity"], b.metadata["age"]) == ("NaN", None, None)
    assert (c.metadata["label"], c.metadata["age"], c.metadata["covid"]) == ("unlabelled", 41, True)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["yes", "N/A", "no", ""], "bool"),  # N/A is a missing value, not text
        (["41", "NaN", "73"], "int64"),
        (["1.5", "null", "2"], "float64"),
        (["N/A", "n/a"], "string"),  # nothing but missing words: nothing to go on
        (["female", "N/A"], "string"),
    ],
)
def test_the_suggested_declaration_reads_missing_words_as_missing(
    values: list[str], kind: str
) -> None:
    assert infer_type(values) == kind
