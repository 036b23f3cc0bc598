"""The bad-input corpus (tests/bad_inputs.py) through the CLI, the Feast path and the API.

Every refusal must name the problem (CLI: message and non-zero exit; API: 4xx JSON) and
leave each store exactly as it was: the Parquet tables, the Feast registry, the online
store's SQLite file and the index files are hashed before and after every case.
Extreme but valid inputs must be accepted. With ``HEAR_RELIABILITY_LOG`` set, each case
is also written down for RELIABILITY.md (``make reliability``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from feast import FeatureStore
from typer.testing import CliRunner

from hear_features.cli import app
from hear_features.synthetic import write_corpus
from tests.bad_inputs import (
    AUDIO_CASES,
    ENTITY_CASES,
    MANIFEST_CASES,
    AudioCase,
    EntityCase,
    ManifestCase,
    RequestCase,
    request_cases,
    write_observation,
)
from tests.conftest import end_time, feast, make_repo
from tests.support.launch import launch, stop

pytestmark = pytest.mark.slow

# Bookkeeping that a refused run may legitimately update: the engine's record of its
# last run (with the failure counted), and lock files.
_NOT_STORES = (".state.json", ".lock")


@dataclass
class Lab:
    """A registered, applied and materialised repository confined to ``audio``."""

    repo: Path
    audio: Path  # the only audio root
    outside: Path  # a good recording outside the root
    good: Path  # a good recording inside it
    clip_id: str  # one stored clip
    url: str = ""

    def snapshot(self) -> dict[str, str]:
        """sha256 of every store file, plus the row counts, for byte-for-byte checks."""
        out = {}
        for path in sorted((self.repo / "data").rglob("*")):
            if path.is_file() and not path.name.endswith(_NOT_STORES):
                out[str(path.relative_to(self.repo))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
        return out


def counts(repo: Path) -> tuple[int, int]:
    data = repo / "data"
    return (
        pq.read_metadata(data / "registrations.parquet").num_rows,
        pq.read_metadata(data / "embeddings.parquet").num_rows,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, standin_dir: Path) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    audio = root / "audio"
    write_corpus(audio / "corpus", subjects=1, per_label=1, seed=8)
    outside = root / "elsewhere" / "private.wav"
    outside.parent.mkdir()
    good = audio / "corpus" / "good_extra.wav"
    rng = np.random.default_rng(0)
    sf.write(good, (0.2 * rng.standard_normal(40_000)).astype(np.float32), 16_000)
    sf.write(outside, (0.2 * rng.standard_normal(40_000)).astype(np.float32), 16_000)

    repo = make_repo(root / "repo", standin_dir)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"]["audio_roots"] = [str(audio)]
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("register", str(audio / "corpus" / "manifest.csv"), "--repo", str(repo))
    assert result.exit_code == 0, result.output
    feast(repo, "apply")
    feast(repo, "materialize-incremental", end_time())
    clip_id = pq.read_table(repo / "data" / "embeddings.parquet")["clip_id"][0].as_py()
    lab = Lab(repo, audio, outside, good, clip_id)
    process, url = launch(repo, "--max-upload-mb", "8", "--max-audio-s", "60")
    lab.url = url
    try:
        yield lab
    finally:
        stop(process)


def cli(*args: str):  # type: ignore[no-untyped-def]
    """The real `hear-features` typer app, in this process."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def case_folder(lab: Lab, name: str) -> Path:
    folder = lab.audio / "cases" / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def excerpt(message: str, expect: str) -> str:
    """The line of ``message`` that matches ``expect`` (else its start), temp paths shortened."""
    match = re.search(expect, message)
    if match is None:
        text = message
    else:
        start = message.rfind("\n", 0, match.start()) + 1
        end = message.find("\n", match.end())
        text = message[start : end if end >= 0 else len(message)]
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-[^/]+/", "<tmp>/", " ".join(text.split()))
    return text[:300]


def check_refusal(
    lab: Lab,
    before: dict[str, str],
    *,
    case: str,
    path: str,
    expect: str,
    message: str,
    refused: bool,
    expected_text: str,
) -> None:
    after = lab.snapshot()
    unchanged = after == before
    observed = excerpt(message, expect)
    write_observation(
        {
            "case": case,
            "path": path,
            "expected": expected_text,
            "observed": observed,
            "stores_unchanged": unchanged,
            "ok": refused and unchanged and bool(re.search(expect, message)),
        }
    )
    assert refused, f"{case} via {path} was not refused: {message}"
    assert re.search(expect, message), f"{case} via {path}: {message!r} does not match {expect!r}"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert unchanged, f"{case} via {path} changed {changed}"


# ---- audio files: register, embed, upload --------------------------------------------------


@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if c.expect], ids=lambda c: c.name)
def test_register_refuses_bad_audio(lab: Lab, case: AudioCase) -> None:
    source = case.make(case_folder(lab, case.name))
    before = lab.snapshot()
    result = cli("register", str(source), "--repo", str(lab.repo))
    check_refusal(
        lab,
        before,
        case=case.name,
        path="cli register",
        expect=case.expect or "",
        message=result.output,
        refused=result.exit_code != 0,
        expected_text=f"exit != 0, message /{case.expect}/",
    )
    assert source.name in result.output or str(source) in result.output


@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if c.expect], ids=lambda c: c.name)
def test_embed_refuses_bad_audio(lab: Lab, case: AudioCase, standin_dir: Path) -> None:
    folder = case_folder(lab, case.name)
    source = next((p for p in folder.iterdir() if p.name != "out.parquet"), None) or case.make(
        folder
    )
    before = lab.snapshot()
    out = folder / "out.parquet"
    result = cli("embed", str(source), "-o", str(out), "--model", str(standin_dir))
    check_refusal(
        lab,
        before,
        case=case.name,
        path="cli embed",
        expect=case.expect or "",
        message=result.output,
        refused=result.exit_code != 0,
        expected_text=f"exit != 0, message /{case.expect}/",
    )
    if out.exists():  # nothing of the bad file may have been written
        assert pq.read_metadata(out).num_rows == 0


@pytest.mark.parametrize(
    "case", [c for c in AUDIO_CASES if c.expect and c.upload], ids=lambda c: c.name
)
def test_upload_refuses_bad_audio(lab: Lab, case: AudioCase) -> None:
    source = case.make(case_folder(lab, case.name + " upload"))
    before = lab.snapshot()
    with httpx.Client(base_url=lab.url, timeout=60) as client:
        r = client.post(
            "/v1/search/audio", files={"file": (source.name, source.read_bytes(), "audio/wav")}
        )
    body = r.json()
    check_refusal(
        lab,
        before,
        case=case.name,
        path="api POST /v1/search/audio",
        expect=case.expect or "",
        message=f"{r.status_code} {body}",
        refused=400 <= r.status_code < 500,
        expected_text=f"4xx JSON, message /{case.expect}/",
    )
    assert set(body) == {"error"} and body["error"]["message"]


@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if not c.expect], ids=lambda c: c.name)
def test_extreme_but_valid_audio_is_accepted_everywhere(
    lab: Lab, case: AudioCase, standin_dir: Path, tmp_path: Path
) -> None:
    source = case.make(case_folder(lab, case.name))
    # A throwaway repository, so the lab's stores stay as the other cases expect them.
    repo = make_repo(tmp_path / "repo", standin_dir)
    registered = cli("register", str(source), "--repo", str(repo), "--label", "x")
    assert registered.exit_code == 0, registered.output
    clips = pq.read_metadata(repo / "data" / "registrations.parquet").num_rows
    out = tmp_path / "out.parquet"
    embedded = cli("embed", str(source), "-o", str(out), "--model", str(standin_dir))
    assert embedded.exit_code == 0, embedded.output
    table = pq.read_table(out)
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    assert table.num_rows == clips >= 1 and vectors.shape[1] == 512
    assert np.isfinite(vectors).all()
    closeness = ""
    if case.reference is not None:  # the same sound as a plain WAV: same clips, same vectors
        reference = case.reference(tmp_path)
        ref_out = tmp_path / "reference.parquet"
        ref_run = cli("embed", str(reference), "-o", str(ref_out), "--model", str(standin_dir))
        assert ref_run.exit_code == 0, ref_run.output
        ref_table = pq.read_table(ref_out)
        assert table["offset_s"].to_pylist() == ref_table["offset_s"].to_pylist()
        ref_vectors = np.stack(ref_table["embedding"].to_numpy(zero_copy_only=False))
        cosine = np.sum(vectors * ref_vectors, axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref_vectors, axis=1)
        )
        assert cosine.min() >= case.min_cosine, cosine
        closeness = f"; clips and vectors as the plain WAV's (cosine >= {cosine.min():.4f})"
    with httpx.Client(base_url=lab.url, timeout=60) as client:
        r = client.post(
            "/v1/search/audio", files={"file": (source.name, source.read_bytes(), "audio/wav")}
        )
    assert r.status_code == 200, r.text
    write_observation(
        {
            "case": case.name,
            "path": "cli register + cli embed + api upload",
            "expected": "accepted",
            "observed": f"{clips} clip(s) registered and embedded{closeness}; "
            f"upload answered {r.status_code}",
            "stores_unchanged": None,
            "ok": True,
        }
    )


# ---- manifests and entity files -------------------------------------------------------------


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=lambda c: c.name)
def test_register_refuses_bad_manifests(lab: Lab, case: ManifestCase) -> None:
    folder = case_folder(lab, case.name)
    good = folder / lab.good.name
    good.write_bytes(lab.good.read_bytes())
    manifest = case.make(folder, good, lab.outside)
    before = lab.snapshot()
    result = cli("register", str(manifest), "--repo", str(lab.repo))
    check_refusal(
        lab,
        before,
        case=case.name,
        path="cli register",
        expect=case.expect,
        message=result.output,
        refused=result.exit_code != 0,
        expected_text=f"exit != 0, message /{case.expect}/",
    )


def test_register_refuses_files_outside_the_roots(lab: Lab) -> None:
    before = lab.snapshot()
    result = cli("register", str(lab.outside), "--repo", str(lab.repo))
    check_refusal(
        lab,
        before,
        case="audio file outside the audio roots",
        path="cli register",
        expect="outside the configured audio roots",
        message=result.output,
        refused=result.exit_code != 0,
        expected_text="exit != 0, names the roots",
    )


@pytest.mark.parametrize("case", ENTITY_CASES, ids=lambda c: c.name)
def test_training_set_refuses_bad_entity_files(lab: Lab, case: EntityCase) -> None:
    folder = case_folder(lab, case.name)
    entities = case.make(folder, lab.clip_id)
    out = folder / "training.parquet"
    before = lab.snapshot()
    result = cli("training-set", str(entities), "-o", str(out), "--repo", str(lab.repo))
    check_refusal(
        lab,
        before,
        case=case.name,
        path="cli training-set",
        expect=case.expect,
        message=result.output,
        refused=result.exit_code != 0,
        expected_text=f"exit != 0, message /{case.expect}/",
    )
    assert not out.exists()


# ---- the Feast path ----------------------------------------------------------------------------


def test_materialize_refuses_rows_it_must_not_read(lab: Lab) -> None:
    """Registration rows written by someone else (or before the roots were set): a file
    outside the roots, a remote URI, and a file that changed since it was registered.
    `feast materialize` names each and stores nothing for them."""
    registrations = lab.repo / "data" / "registrations.parquet"
    original = registrations.read_bytes()
    table = pq.read_table(registrations)
    template = table.slice(0, 1).to_pylist()[0]
    changed = case_folder(lab, "changed after registration") / "changed.wav"
    changed.write_bytes(lab.good.read_bytes())
    assert cli("register", str(changed), "--repo", str(lab.repo)).exit_code == 0
    changed.write_text("overwritten with text")
    bad_rows = [
        {**template, "clip_id": f"{uri_id}-00000000", "recording_id": uri_id, "audio_uri": uri}
        for uri_id, uri in (("a0", str(lab.outside)), ("a1", "http://example.org/c.wav"))
    ]
    with_bad = pa.concat_tables(
        [pq.read_table(registrations), pa.Table.from_pylist(bad_rows, table.schema)]
    )
    pq.write_table(with_bad, registrations)

    # The registrations table is this test's own input; Feast's registry.db records the
    # attempted run (bookkeeping, no data).
    def data_stores() -> dict[str, str]:
        skip = ("registrations.parquet", "registry.db")
        return {k: v for k, v in lab.snapshot().items() if not k.endswith(skip)}

    before = data_stores()
    try:
        proc = feast(lab.repo, "materialize-incremental", end_time(), check=False)
        message = proc.stdout + proc.stderr
        after = data_stores()
        for name, expect in (
            ("registration row outside the audio roots", "outside the configured audio roots"),
            ("registration row with an http:// URI", "scheme 'http' is not allowed"),
            ("registered file changed before materialize", "changed since it was registered"),
        ):
            write_observation(
                {
                    "case": name,
                    "path": "feast materialize-incremental",
                    "expected": f"exit != 0, /{expect}/",
                    "observed": _line_with(message, expect),
                    "stores_unchanged": after == before,
                    "ok": proc.returncode != 0 and expect in message and after == before,
                }
            )
            assert expect in message, message
        assert proc.returncode != 0
        assert after == before
    finally:
        registrations.write_bytes(original)


def _line_with(text: str, needle: str) -> str:
    at = text.find(needle)
    found = text[max(0, at - 120) : at + 60] if at >= 0 else text[-200:]
    return re.sub(r"/tmp/pytest-of-[^/]+/pytest-[^/]+/", "<tmp>/", " ".join(found.split()))


def feast_cases(store: FeatureStore, clip_id: str) -> list[tuple[str, object]]:
    good = [0.01] * 512

    def write(vector: list[float]) -> object:
        import pandas as pd

        text = ["recording_id", "subject_id", "label", "dataset", "device", "audio_uri"]
        frame = pd.DataFrame(
            {
                "clip_id": [clip_id],
                "embedding": [vector],
                "model_id": ["m"],
                **{name: ["x"] for name in text},
                "offset_s": [0.0],
                "event_timestamp": [pd.Timestamp.now(tz="UTC")],
                "created": [pd.Timestamp.now(tz="UTC")],
            }
        )
        return lambda: store.write_to_online_store("cough_embeddings", frame)

    def search(vector: list[float], k: int) -> object:
        return lambda: store.retrieve_online_documents_v2(
            features=["cough_embeddings:embedding", "cough_embeddings:label"],
            query=vector,
            top_k=k,
            distance_metric="COSINE",
        ).to_dict()

    nan = list(good)
    nan[3] = float("nan")
    return [
        ("write_to_online_store: 100-d vector", write([0.1] * 100), r"length 100 .* 512"),
        ("write_to_online_store: NaN in the vector", write(nan), r"NaN or infinite"),
        (
            "retrieve_online_documents_v2: 100-d query",
            search([0.1] * 100, 5),
            r"has 100 values; stored vectors have 512",
        ),
        ("retrieve_online_documents_v2: NaN query", search(nan, 5), r"finite"),
        ("retrieve_online_documents_v2: top_k = 0", search(good, 0), r"k must be at least 1"),
        ("retrieve_online_documents_v2: top_k = -5", search(good, -5), r"k must be at least 1"),
    ]  # type: ignore[list-item]


def test_feast_sdk_refuses_bad_vectors_and_k(lab: Lab) -> None:
    store = FeatureStore(repo_path=str(lab.repo))
    for name, call, expect in feast_cases(store, lab.clip_id):  # type: ignore[misc]
        before = lab.snapshot()
        try:
            call()
        except Exception as exc:  # Feast wraps nothing: our own error arrives
            message, refused = f"{type(exc).__name__}: {exc}", True
        else:
            message, refused = "accepted", False
        check_refusal(
            lab,
            before,
            case=name,
            path="feast SDK",
            expect=expect,
            message=message,
            refused=refused,
            expected_text=f"error /{expect}/",
        )


def test_feast_sdk_huge_top_k_returns_every_stored_clip(lab: Lab) -> None:
    store = FeatureStore(repo_path=str(lab.repo))
    stored = counts(lab.repo)[1]
    before = lab.snapshot()
    docs = store.retrieve_online_documents_v2(
        features=["cough_embeddings:embedding"],
        query=[0.01] * 512,
        top_k=10**12,
        distance_metric="COSINE",
    ).to_dict()
    assert lab.snapshot() == before
    assert len(docs["clip_id"]) == len(set(docs["clip_id"])) == stored
    write_observation(
        {
            "case": "retrieve_online_documents_v2: top_k = 10**12",
            "path": "feast SDK",
            "expected": "every stored clip once, no huge allocation",
            "observed": f"{len(docs['clip_id'])} documents of {stored} stored",
            "stores_unchanged": True,
            "ok": True,
        }
    )


# ---- the HTTP API ------------------------------------------------------------------------------


def _request_ids() -> list[str]:
    return [c.name for c in request_cases("x")]


@pytest.mark.parametrize("name", _request_ids())
def test_api_refuses_bad_requests(lab: Lab, name: str) -> None:
    case: RequestCase = next(c for c in request_cases(lab.clip_id) if c.name == name)
    before = lab.snapshot()
    with httpx.Client(base_url=lab.url, timeout=60) as client:
        r = client.request(
            case.method,
            case.url,
            json=case.json,
            content=case.content,
            headers=case.headers,
            files=case.files,
        )
    body = r.json()
    check_refusal(
        lab,
        before,
        case=case.name,
        path=f"api {case.method} {case.url.split('?')[0]}",
        expect=case.expect,
        message=f"{r.status_code} {body}",
        refused=r.status_code == case.status,
        expected_text=f"{case.status} JSON, message /{case.expect}/",
    )
    assert set(body) == {"error"}
