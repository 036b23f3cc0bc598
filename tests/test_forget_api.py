"""Deleting data over HTTP: admin keys only, 404 for unknown ids, and two real uvicorn
servers on one repository: the one that handled the DELETE stops returning the clips at
once, the other at once for look-ups and within its refresh interval for full result
lists."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from hear_features.featurestore.audit import AuditLog
from tests.conftest import Workflow, feast
from tests.support.launch import launch, stop
from tests.support.readme import block_after, run_curl_lines

pytestmark = pytest.mark.slow

READ_KEY = "read-key-for-forget-tests"
ADMIN_KEY = "admin-key-for-forget-tests"
REFRESH_S = 1.0


@dataclass
class Servers:
    repo: Path
    a: str  # handles the deletions
    b: str  # another worker process on the same repository

    def client(self, url: str, key: str | None = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": key} if key else {})


@pytest.fixture(scope="module")
def servers(workflow: Workflow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    repo = tmp_path_factory.mktemp("forget-api") / "repo"
    shutil.copytree(workflow.repo, repo)
    (repo / "forget-audit.jsonl").unlink(missing_ok=True)
    feast(repo, "apply")
    env = {
        "HEAR_API_KEY": READ_KEY,
        "HEAR_ADMIN_API_KEY": ADMIN_KEY,
        "HEAR_API_LOAD_ENCODER": "false",
        "HEAR_API_REFRESH_S": str(REFRESH_S),
    }
    a, url_a = launch(repo, env=env)
    try:
        b, url_b = launch(repo, env=env)
    except BaseException:
        stop(a)
        raise
    try:
        yield Servers(repo, url_a, url_b)
    finally:
        stop(a)
        stop(b)


def embeddings(repo: Path) -> dict[str, dict]:
    return {
        r["clip_id"]: r for r in pq.read_table(repo / "data" / "embeddings.parquet").to_pylist()
    }


def found(client: httpx.Client, vector: list[float], k: int) -> list[str]:
    reply = client.post("/v1/search/vector", json={"vector": vector, "k": k})
    assert reply.status_code == 200, reply.text
    return [r["clip_id"] for r in reply.json()["results"]]


def test_the_readme_curl_lines_delete_with_an_admin_key(servers: Servers, tmp_path: Path) -> None:
    """The README's "Deleting data" curl lines, as written (ids and host swapped for
    stored ones), with the admin key: every one answers 2xx and the ids are gone."""
    script = block_after("## Deleting data", "bash", containing="curl")
    stored = embeddings(servers.repo)
    recordings: dict[str, dict[str, set[str]]] = {}
    for clip, row in stored.items():
        recordings.setdefault(row["subject_id"], {}).setdefault(row["recording_id"], set()).add(
            clip
        )
    # (subject-1 is the next tests'; this one runs first, on the full store)
    mine = sorted((s for s in recordings if s != "subject-1"), key=lambda s: len(recordings[s]))
    subject, other = mine[0], mine[-1]
    # The other subject's smallest recording goes whole, one clip of the next one too; its
    # largest recording is left whole for test_forget_by_recording_and_by_selectors.
    by_size = sorted(recordings[other], key=lambda r: (len(recordings[other][r]), r))
    assert subject != other and len(by_size) >= 3, "the example needs 3 recordings of one subject"
    recording, nearby = by_size[0], by_size[1]
    clip = sorted(recordings[other][nearby])[0]
    swap = {
        "3f2a9c0e1b7d4a55-00001800": clip,
        "3f2a9c0e1b7d4a55": recording,
        "subject-0042": subject,
        "http://127.0.0.1:8000": servers.a,
    }
    for example, real in swap.items():
        script = script.replace(example, real)
    run = run_curl_lines(script, tmp_path, {"ADMIN_KEY": ADMIN_KEY}, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count('"forget_id":"F-') == 3  # three deletions, then a dry run
    left = embeddings(servers.repo)
    gone = {c for r in recordings[subject].values() for c in r}
    gone |= recordings[other][recording] | {clip}
    assert not gone & left.keys()


def test_only_an_admin_key_deletes_and_unknown_ids_are_404(servers: Servers) -> None:
    before = embeddings(servers.repo)
    with servers.client(servers.a, None) as c:
        assert c.delete("/v1/subjects/subject-1").status_code == 401
    with servers.client(servers.a, READ_KEY) as c:
        reply = c.delete("/v1/subjects/subject-1")
        assert reply.status_code == 403 and "admin key" in reply.json()["error"]["message"]
        assert c.post("/v1/forget", json={"subject_ids": ["subject-1"]}).status_code == 403
    with servers.client(servers.a) as c:
        for path in ("/v1/clips/no-such-clip", "/v1/recordings/nope", "/v1/subjects/nobody"):
            reply = c.delete(path)
            assert reply.status_code == 404, reply.text
            assert "nothing to forget" in reply.json()["error"]["message"]
        bad = c.post("/v1/forget", json={"subject_ids": ["x"], "labels": ["cough"]})
        assert bad.status_code == 422 and "labels" in bad.text
        empty = c.post("/v1/forget", json={"dry_run": True})
        assert empty.status_code == 422 and "select the clips" in empty.json()["error"]["message"]
    assert embeddings(servers.repo).keys() == before.keys()


def test_a_deleted_subject_leaves_every_worker(servers: Servers) -> None:
    stored = embeddings(servers.repo)
    gone = {c for c, r in stored.items() if r["subject_id"] == "subject-1"}
    kept = set(stored) - gone
    query = np.asarray(stored[sorted(gone)[0]]["embedding"]).tolist()
    everything = len(stored)
    with servers.client(servers.a) as a, servers.client(servers.b) as b:
        for c in (a, b):
            assert set(found(c, query, everything)) == set(stored)
        dry = a.post("/v1/forget", json={"subject_ids": ["subject-1"], "dry_run": True})
        assert dry.status_code == 200 and dry.json()["forget_id"] is None
        assert dry.json()["counts"]["clips"] == len(gone)
        assert set(found(a, query, everything)) == set(stored)  # a dry run changes nothing

        reply = a.delete("/v1/subjects/subject-1")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["counts"]["clips"] == len(gone) and body["forget_id"]
        # The worker that handled it: at once, with full result lists.
        assert set(found(a, query, everything)) == kept
        for clip in gone:
            assert a.get(f"/v1/clips/{clip}").status_code == 404
            assert b.get(f"/v1/clips/{clip}").status_code == 404  # the other one too
        # The other worker never returns them; its index drops them at its next refresh.
        assert not set(found(b, query, everything)) & gone
        deadline = time.monotonic() + 10 * REFRESH_S
        while b.get("/v1/status").json()["index_vectors"] != len(kept):
            assert time.monotonic() < deadline, "the other worker did not refresh its index"
            time.sleep(0.1)
        assert set(found(b, query, everything)) == kept
        training = a.post(
            "/v1/training-set",
            json={"entities": [{"clip_id": c, "event_timestamp": "2020-01-01"} for c in gone]},
        )
        assert training.status_code == 404
        assert not {*a.get("/v1/map", params={"method": "pca"}).json()["clip_ids"]} & gone
    (entry,) = [
        e
        for e in map(json.loads, (servers.repo / "forget-audit.jsonl").read_text().splitlines())
        if e["id"] == body["forget_id"]
    ]
    assert entry["who"] == "api-key:admin-api-key" and entry["id"] == body["forget_id"]
    assert AuditLog(servers.repo).find("subject_id", "subject-1") == [entry]


def test_forget_by_recording_and_by_selectors(servers: Servers) -> None:
    stored = embeddings(servers.repo)
    by_recording: dict[str, set[str]] = {}
    for clip, row in stored.items():
        by_recording.setdefault(row["recording_id"], set()).add(clip)
    recording = max(sorted(by_recording), key=lambda r: len(by_recording[r]))
    clips = by_recording[recording]
    one, *rest = sorted(clips)
    assert rest, "a recording of two clips or more is needed"
    with servers.client(servers.a) as a:
        reply = a.post("/v1/forget", json={"clip_ids": [one, "never-seen"]})
        assert reply.status_code == 200
        assert reply.json()["unmatched"] == {"clip_id": ["never-seen"]}
        assert a.delete(f"/v1/clips/{one}").status_code == 404  # gone already
        reply = a.delete(f"/v1/recordings/{recording}")
        assert reply.status_code == 200 and reply.json()["counts"]["clips"] == len(rest)
    assert not clips & embeddings(servers.repo).keys()
