"""Vector search through the stock Feast SDK and Feast's own feature server, backed by
HearOnlineStore's FAISS index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from feast.filter_models import ComparisonFilter, CompoundFilter

from hear_features.featurestore.repo import open_store
from tests.conftest import FEAST, Workflow, end_time, feast, make_repo, noise, register
from tests.support.launch import free_port, wait_ready

pytestmark = pytest.mark.slow

FEATURES = ["cough_embeddings:embedding", "cough_embeddings:label", "cough_embeddings:model_id"]


def stored(workflow: Workflow) -> dict[str, dict]:
    """Newest offline row of every clip: the truth search results are checked against."""
    rows = pq.read_table(workflow.repo / "data" / "embeddings.parquet").to_pylist()
    rows.sort(key=lambda r: (r["event_timestamp"], r["created"]))
    return {r["clip_id"]: r for r in rows}


def cosine_distances(query: np.ndarray, truth: dict[str, dict]) -> dict[str, float]:
    q = query / np.linalg.norm(query)
    return {
        c: 1 - float(q @ (v := np.asarray(r["embedding"])) / np.linalg.norm(v))
        for c, r in truth.items()
    }


def search(workflow: Workflow, query: np.ndarray, k: int, filters=None) -> list[dict]:  # type: ignore[no-untyped-def]
    store = open_store(workflow.repo)
    out = store.retrieve_online_documents_v2(
        features=FEATURES, query=query.tolist(), top_k=k, filters=filters
    ).to_dict()
    return [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]


def test_sdk_search_returns_the_exact_neighbours_with_their_own_distances(
    workflow: Workflow,
) -> None:
    truth = stored(workflow)
    query = np.asarray(next(iter(truth.values()))["embedding"]) + 0.3
    expected = cosine_distances(query, truth)
    hits = search(workflow, query, 5)
    assert {h["clip_id"] for h in hits} == set(sorted(expected, key=expected.get)[:5])
    for hit in hits:  # each hit carries its own distance, label and vector
        assert hit["distance"] == pytest.approx(expected[hit["clip_id"]], abs=1e-5)
        assert hit["label"] == truth[hit["clip_id"]]["label"]
        np.testing.assert_allclose(hit["embedding"], truth[hit["clip_id"]]["embedding"], atol=1e-6)
        assert hit["model_id"] == "hear-features/standin@v1-seed0"
    by_distance = [h["clip_id"] for h in sorted(hits, key=lambda h: h["distance"])]
    assert by_distance != sorted(by_distance), (
        "the ranking must differ from key order to test pairing"
    )


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (
            ComparisonFilter(type="eq", key="label", value="speech"),
            lambda r: r["label"] == "speech",
        ),
        (
            ComparisonFilter(type="ne", key="label", value="speech"),
            lambda r: r["label"] != "speech",
        ),
        (
            ComparisonFilter(type="in", key="subject_id", value=["subject-0", "subject-9"]),
            lambda r: r["subject_id"] in ("subject-0", "subject-9"),
        ),
        (ComparisonFilter(type="gt", key="offset_s", value=1.0), lambda r: r["offset_s"] > 1.0),
        (
            CompoundFilter(
                type="and",
                filters=[
                    ComparisonFilter(type="eq", key="dataset", value="synthetic"),
                    CompoundFilter(
                        type="or",
                        filters=[
                            ComparisonFilter(type="eq", key="label", value="breath"),
                            ComparisonFilter(type="eq", key="subject_id", value="subject-1"),
                        ],
                    ),
                ],
            ),
            lambda r: (
                r["dataset"] == "synthetic"
                and (r["label"] == "breath" or r["subject_id"] == "subject-1")
            ),
        ),
    ],
)
def test_filters_never_let_an_excluded_clip_through(workflow: Workflow, filters, keep) -> None:  # type: ignore[no-untyped-def]
    truth = stored(workflow)
    allowed = {c for c, r in truth.items() if keep(r)}
    assert 0 < len(allowed) < len(truth)
    query = np.asarray(next(iter(truth.values()))["embedding"])
    hits = search(workflow, query, len(truth), filters)
    assert {h["clip_id"] for h in hits} == allowed


def test_a_bad_query_is_refused_clearly(workflow: Workflow) -> None:
    store = open_store(workflow.repo)
    with pytest.raises(Exception, match="the query has 3 values; stored vectors have 512"):
        store.retrieve_online_documents_v2(features=FEATURES, query=[0.1, 0.2, 0.3], top_k=3)
    with pytest.raises(Exception, match="finite numbers"):
        store.retrieve_online_documents_v2(features=FEATURES, query=[float("nan")] * 512, top_k=3)


def test_a_reader_process_sees_writes_made_by_another_process(
    tmp_path: Path, standin_dir: Path
) -> None:
    """This process holds the index in memory; `feast materialize` in another process adds
    a clip; the next search here finds it without a restart."""
    repo = make_repo(tmp_path / "repo", standin_dir)
    sf.write(tmp_path / "first.wav", noise(4.0, 16_000, seed=76), 16_000)
    register(repo, str(tmp_path / "first.wav"), "--label", "first")
    feast(repo, "apply")
    feast(repo, "materialize-incremental", end_time())
    mine = Workflow(repo, tmp_path, "", tmp_path, "", "", "")
    assert search(mine, np.ones(512, np.float32), 3)  # the index is now in this process
    audio = tmp_path / "newcomer.wav"
    sf.write(audio, noise(2.0, 16_000, seed=77), 16_000)
    register(repo, str(audio), "--label", "newcomer")
    feast(repo, "materialize-incremental", end_time())
    new_id = next(c for c, r in stored(mine).items() if r["label"] == "newcomer")
    query = np.asarray(stored(mine)[new_id]["embedding"])
    hits = search(mine, query, 1)
    assert hits[0]["clip_id"] == new_id and hits[0]["distance"] == pytest.approx(0, abs=1e-5)
    # And a brand-new process loads the saved index plus what changed since.
    code = (
        "from pathlib import Path\n"
        "from hear_features.featurestore.repo import open_store\n"
        f"s = open_store(Path({str(repo)!r}))\n"
        f"q = {query.tolist()!r}\n"
        "out = s.retrieve_online_documents_v2(\n"
        "    features=['cough_embeddings:label'], query=q, top_k=1).to_dict()\n"
        "print(out['clip_id'][0], out['label'][0])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == [new_id, "newcomer"]


def test_feast_feature_server_answers_search_from_this_store(workflow: Workflow) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(FEAST), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=workflow.repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server, 120, path="/health")
        truth = stored(workflow)
        query = np.asarray(next(iter(truth.values()))["embedding"]) + 0.3
        expected = cosine_distances(query, truth)
        body = {
            "features": ["cough_embeddings:label", "cough_embeddings:model_id"],
            "query": query.tolist(),
            "top_k": 4,
            "api_version": 2,
        }
        reply = httpx.post(f"{base}/search", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        names = data["metadata"]["feature_names"]
        columns = {
            name: result["values"] for name, result in zip(names, data["results"], strict=True)
        }
        assert len(columns["clip_id"]) == 4
        for clip, label, distance in zip(
            columns["clip_id"], columns["label"], columns["distance"], strict=True
        ):
            assert label == truth[clip]["label"]
            assert distance == pytest.approx(expected[clip], abs=1e-5)
        assert set(columns["clip_id"]) == set(sorted(expected, key=expected.get)[:4])
        # Online reads: the feature server takes the store's coroutine path.
        clips = sorted(truth)[:2]
        reply = httpx.post(
            f"{base}/get-online-features",
            json={"features": ["cough_embeddings:label"], "entities": {"clip_id": clips}},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        labels = reply.json()["results"][1]["values"]
        assert labels == [truth[c]["label"] for c in clips]
    finally:
        server.terminate()
        server.wait(timeout=30)
