"""The explorer against a real uvicorn server: its endpoints with httpx, its page in a real
headless Chromium (Playwright driving the system's browser).

One server for the module, started with an API key and with the corpus folder as its
only audio root; one extra recording is registered from outside that root.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from hear_features.audio import SAMPLE_RATE, windows_at
from hear_features.synthetic import cough, speech, write_corpus
from tests.browser import chromium, why_no_browser
from tests.conftest import end_time, feast, make_repo, register
from tests.support.launch import launch, stop

pytestmark = pytest.mark.slow

API_KEY = "explorer-test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
K = 5


@dataclass
class Site:
    url: str
    repo: Path
    corpus: Path
    clips: dict[str, dict[str, Any]]  # registered clip id -> registration row
    outside_clip: str  # registered from outside the audio root
    mutable: Path  # a registered recording the tests move and change (and restore)
    mutable_clip: str
    query: Path  # a 2 s cough recording, not registered

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=60, headers={"X-API-Key": key} if key else {}
        )

    def stored(self) -> set[str]:
        table = pq.read_table(self.repo / "data" / "embeddings.parquet", columns=["clip_id"])
        return set(table["clip_id"].to_pylist())


def clip_of(clips: dict[str, dict[str, Any]], path: Path) -> str:
    return next(cid for cid, row in clips.items() if row["audio_uri"] == str(path))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, standin_dir: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("explorer")
    corpus = root / "corpus"
    write_corpus(corpus, subjects=2, per_label=1, seed=11)
    rng = np.random.default_rng(7)
    mutable = corpus / "to_move.wav"
    sf.write(mutable, cough(rng, SAMPLE_RATE, subject=1), SAMPLE_RATE)
    outside = root / "elsewhere" / "outside.wav"
    outside.parent.mkdir()
    sf.write(outside, speech(rng, SAMPLE_RATE, subject=1), SAMPLE_RATE)  # far from the query
    query = root / "query.wav"
    sf.write(query, cough(rng, SAMPLE_RATE, subject=0, seconds=2.0), SAMPLE_RATE)

    repo = make_repo(root / "repo", standin_dir)
    with (corpus / "manifest.csv").open("a") as manifest:  # one register run for all
        for path in (mutable, outside):
            manifest.write(f"{path},{path.stem},subject-9,synthetic,simulated\n")
    register(repo, str(corpus / "manifest.csv"))
    feast(repo, "apply")
    feast(repo, "materialize-incremental", end_time())
    rows = pq.read_table(repo / "data" / "registrations.parquet").to_pylist()
    clips = {r["clip_id"]: r for r in rows}

    process, url = launch(repo, env={"HEAR_API_KEY": API_KEY, "HEAR_AUDIO_ROOTS": str(corpus)})
    try:
        # UMAP compiles with numba for a while: start it now, the last test collects it.
        assert httpx.get(f"{url}/v1/map?method=umap", headers=AUTH).status_code == 202
        yield Site(
            url,
            repo,
            corpus,
            clips,
            clip_of(clips, outside),
            mutable,
            clip_of(clips, mutable),
            query,
        )
    finally:
        stop(process)


def first_corpus_clip(site: Site) -> tuple[str, dict[str, Any]]:
    return next(
        (cid, row)
        for cid, row in sorted(site.clips.items())
        if Path(row["audio_uri"]).parent == site.corpus and cid != site.mutable_clip
    )


# ---- endpoints ----------------------------------------------------------------------------


def test_clip_audio_is_the_registered_window_as_2_s_wav(site: Site) -> None:
    clip_id, row = first_corpus_clip(site)
    with site.client() as c:
        reply = c.get(f"/v1/clips/{clip_id}/audio")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(reply.content), dtype="float32")
    assert (rate, len(samples), len(samples) / rate) == (16_000, 32_000, 2.0)
    (window,) = windows_at(row["audio_uri"], [round(row["offset_s"] * SAMPLE_RATE)])
    np.testing.assert_allclose(samples, np.clip(window.samples, -1, 1), atol=2 / 32_768)


def test_clip_spectrogram_is_a_png(site: Site) -> None:
    clip_id, _ = first_corpus_clip(site)
    with site.client() as c:
        reply = c.get(f"/v1/clips/{clip_id}/spectrogram.png")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(reply.content)).size == (198, 64)


def test_media_and_map_need_the_key(site: Site) -> None:
    clip_id, _ = first_corpus_clip(site)
    paths = [
        f"/v1/clips/{clip_id}/audio",
        f"/v1/clips/{clip_id}/spectrogram.png",
        "/v1/map",
        "/v1/map/info",
    ]
    for key in (None, "wrong-key-wrong-key"):
        with site.client(key) as c:
            for path in paths:
                reply = c.get(path)
                assert reply.status_code == 401, (path, reply.text)
                assert reply.json()["error"]["type"] == "Unauthorized"
    with site.client(None) as c:  # the page itself holds no data
        page = c.get("/explorer")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/explorer/explorer.js").status_code == 200


def test_unknown_clip_ids_are_404(site: Site) -> None:
    with site.client() as c:
        for suffix in ("audio", "spectrogram.png"):
            reply = c.get(f"/v1/clips/0000000000000000-00000000/{suffix}")
            assert reply.status_code == 404
            assert "0000000000000000-00000000" in reply.json()["error"]["message"]


def test_a_clip_outside_the_audio_roots_is_403(site: Site) -> None:
    with site.client() as c:
        for suffix in ("audio", "spectrogram.png"):
            reply = c.get(f"/v1/clips/{site.outside_clip}/{suffix}")
            assert reply.status_code == 403, reply.text
            assert "outside the configured audio roots" in reply.json()["error"]["message"]


def test_moved_and_changed_source_files_get_a_clear_4xx(site: Site) -> None:
    url = f"/v1/clips/{site.mutable_clip}/audio"
    original = site.mutable.read_bytes()
    moved = site.mutable.with_name("moved_away.wav")
    with site.client() as c:
        assert c.get(url).status_code == 200
        site.mutable.rename(moved)
        try:
            reply = c.get(url)
            assert reply.status_code == 410, reply.text
            assert "moved or deleted" in reply.json()["error"]["message"]
            assert c.get(f"/v1/clips/{site.mutable_clip}/spectrogram.png").status_code == 410
        finally:
            moved.rename(site.mutable)
        assert c.get(url).status_code == 200

        changed = bytearray(original)
        changed[-64:] = bytes(64)
        site.mutable.write_bytes(bytes(changed))
        try:
            reply = c.get(url)
            assert reply.status_code == 409, reply.text
            assert "has changed since" in reply.json()["error"]["message"]
        finally:
            site.mutable.write_bytes(original)
        assert c.get(url).status_code == 200


def test_map_pages_cover_every_stored_clip_with_metadata(site: Site) -> None:
    stored = site.stored()
    with site.client() as c:
        # The site's key has the read role: participant ids are not for it.
        hidden = c.get("/v1/map", params={"columns": "label,subject_id"})
        assert hidden.status_code == 403 and "subject_id" in hidden.json()["error"]["message"]
        whole = c.get("/v1/map", params={"columns": "label,dataset"}).json()
        assert whole["method"] == "pca" and whole["total"] == len(stored) == whole["count"]
        assert set(whole["clip_ids"]) == stored
        assert all(0.0 <= v <= 1.0 for v in whole["x"] + whole["y"])
        label = whole["columns"]["label"]
        assert label["kind"] == "category"
        labels = {site.clips[cid]["label"] for cid in stored}
        assert labels >= {"cough", "breath", "speech", "outside"}
        assert {label["categories"][code] for code in label["codes"]} == labels
        by_id = dict(zip(whole["clip_ids"], label["codes"], strict=True))
        for cid in stored:
            assert label["categories"][by_id[cid]] == site.clips[cid]["label"]

        pages, offset = [], 0
        while offset < whole["total"]:
            page = c.get(
                "/v1/map", params={"offset": offset, "limit": 4, "columns": ["label"]}
            ).json()
            pages.append(page)
            offset += page["count"]
        assert [cid for p in pages for cid in p["clip_ids"]] == whole["clip_ids"]
        assert [x for p in pages for x in p["x"]] == whole["x"]
        assert [code for p in pages for code in p["columns"]["label"]["codes"]] == label["codes"]

        bad = c.get("/v1/map", params={"columns": "label,shoe_size"})
        assert bad.status_code == 422 and "shoe_size" in bad.json()["error"]["message"]
        assert c.get("/v1/map", params={"method": "tsne"}).status_code == 422

        info = c.get("/v1/map/info").json()
        assert info["points"] == len(stored)
        columns = {col["name"]: col for col in info["columns"]}
        assert set(columns["label"]["values"]) == labels
        assert columns["offset_s"]["kind"] == "number"
        assert info["maps"]["pca"] == "ready"


def test_openapi_documents_the_explorer_endpoints(site: Site) -> None:
    with site.client() as c:
        spec = c.get("/openapi.json").json()
    audio = spec["paths"]["/v1/clips/{clip_id}/audio"]["get"]["responses"]
    assert "audio/wav" in audio["200"]["content"] and {"403", "404", "409", "410"} <= set(audio)
    png = spec["paths"]["/v1/clips/{clip_id}/spectrogram.png"]["get"]["responses"]
    assert "image/png" in png["200"]["content"]
    assert {"200", "202", "401", "422"} <= set(spec["paths"]["/v1/map"]["get"]["responses"])
    assert "/explorer" not in spec["paths"]


# ---- the page in a real browser -------------------------------------------------------------

needs_browser = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))


def wait_until(check: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = why_no_browser()
    if reason is not None:
        pytest.skip(reason)
    with chromium() as b:
        yield b


def open_page(browser: Any, site: Site, key: str | None = API_KEY) -> tuple[Any, list[str]]:
    """A fresh tab (empty session storage) on the explorer, the key typed into its prompt;
    and the list its uncaught script errors go to."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site.url}/explorer")
    page.wait_for_selector("#key-prompt", state="visible")
    if key is not None:
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#app", state="visible")
    return page, errors


@needs_browser
def test_page_without_the_key_shows_the_prompt_and_gets_no_data(browser: Any, site: Site) -> None:
    context = browser.new_context()
    page = context.new_page()
    statuses: list[tuple[str, int]] = []
    page.on("response", lambda r: statuses.append((r.url, r.status)) if "/v1/" in r.url else None)
    page.goto(f"{site.url}/explorer")
    page.wait_for_selector("#key-prompt", state="visible")
    page.wait_for_timeout(500)
    assert page.is_hidden("#app")
    assert page.get_attribute("#map-canvas", "data-points") == "0"
    assert page.eval_on_selector_all("#results tbody tr", "rows => rows.length") == 0
    assert statuses and all(status == 401 for _, status in statuses), statuses

    page.fill("#key-input", "not-the-key-at-all")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-error", state="visible")
    assert "refused" in page.inner_text("#key-error")
    assert all(status == 401 for _, status in statuses)
    assert page.is_hidden("#app")
    context.close()


@needs_browser
def test_explorer_page_end_to_end(browser: Any, site: Site, tmp_path: Path) -> None:
    stored = site.stored()
    page, errors = open_page(browser, site)
    page.wait_for_selector(f"#map-canvas[data-points='{len(stored)}']", timeout=60_000)

    # Upload a WAV: k results, the same as the API gives for that file.
    page.fill("#k", str(K))
    page.set_input_files("#file-input", str(site.query))
    page.wait_for_selector(f"#results[data-count='{K}']", timeout=60_000)
    shown = page.eval_on_selector_all(
        "#results tbody tr", "rows => rows.map(r => r.dataset.clipId)"
    )
    with site.client() as c, site.query.open("rb") as f:
        api = c.post("/v1/search/audio", files={"file": f}, data={"k": K}).json()
    assert shown == [r["clip_id"] for r in api["windows"][0]["results"]]
    page.wait_for_selector("#map-canvas[data-query-points='1']")

    # Play the first result: its audio is a 2.0 s WAV.
    with page.expect_response(lambda r: r.url.endswith("/audio")) as audio_reply:
        page.click("#results tbody tr:first-child button.play")
    assert audio_reply.value.status == 200
    assert audio_reply.value.headers["content-type"] == "audio/wav"
    duration = wait_until(
        lambda: page.evaluate(
            "() => { const d = document.querySelector('#results tbody tr:first-child audio')"
            ".duration; return Number.isFinite(d) && d > 0 ? d : null; }"
        ),
        what="the first result's audio to load",
    )
    assert duration == pytest.approx(2.0, abs=1e-3)
    wait_until(
        lambda: page.evaluate(
            "() => [...document.querySelectorAll('img.spectrogram')]"
            ".every(i => i.complete && i.naturalWidth === 198)"
        ),
        what="every spectrogram",
    )

    # Export the table as CSV.
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["clip_id"] for r in rows] == shown
    assert [float(r["distance"]) for r in rows] == pytest.approx(
        [r["distance"] for r in api["windows"][0]["results"]], abs=1e-6
    )
    # This key may not see subject ids: no empty "subject" column, none in the CSV either.
    headings = page.eval_on_selector_all("#results thead th", "ths => ths.map(t => t.textContent)")
    assert "subject" not in headings and "device" in headings
    assert "subject_id" not in rows[0] and "device" in rows[0]

    # A filter from the page reaches the search: every row has the label asked for.
    page.fill("[data-filter=label]", "breath")
    page.set_input_files("#file-input", str(site.query))
    page.wait_for_selector("#results tbody tr:first-child td:nth-child(4):text-is('breath')")
    labels = page.eval_on_selector_all(
        "#results tbody tr td:nth-child(4)", "cells => cells.map(c => c.textContent)"
    )
    breaths = sum(site.clips[cid]["label"] == "breath" for cid in stored)
    assert len(labels) == min(K, breaths) and set(labels) == {"breath"}
    page.fill("[data-filter=label]", "")

    # Colour by a number column: a gradient legend, every point still drawn.
    page.select_option("#colour-by", "offset_s")
    page.wait_for_selector("#legend .gradient")
    assert page.get_attribute("#map-canvas", "data-points") == str(len(stored))
    page.select_option("#colour-by", "label")
    page.wait_for_selector("#legend .swatch")

    # Per recording: one row per stored recording.
    page.select_option("#aggregation", "recording")
    page.wait_for_selector("#results[data-kind='recording']")
    recordings = page.eval_on_selector_all(
        "#results tbody tr td:nth-child(3) code", "cells => cells.map(c => c.textContent)"
    )
    assert recordings and len(recordings) == len(set(recordings))
    page.select_option("#aggregation", "window")
    page.wait_for_selector("#results[data-kind='window']")

    # Click a point of the map: it plays and becomes the query.
    target, (px, py) = page.evaluate(
        """() => {
            const m = state.map, i = Math.floor(m.ids.length / 2);
            const {w, h, ratio} = canvasSize();
            const [x, y] = toPixel(m.x[i], m.y[i], w, h);
            return [m.ids[i], [x / ratio, y / ratio]];
        }"""
    )
    box = page.locator("#map-canvas").bounding_box()
    with page.expect_response(lambda r: r.url.endswith("/audio")) as point_audio:
        page.mouse.click(box["x"] + px, box["y"] + py)
    assert point_audio.value.status == 200
    picked = page.get_attribute("#selected", "data-clip-id")
    assert picked in stored
    if picked != target:  # another point under the same pixels: as close as the target
        assert page.evaluate(
            """([a, b]) => {
                const m = state.map, i = m.index.get(a), j = m.index.get(b);
                return Math.hypot(m.x[i] - m.x[j], m.y[i] - m.y[j]) < 0.02;
            }""",
            [picked, target],
        )
    wait_until(
        lambda: picked in page.inner_text("#results-summary"), what="the search from the point"
    )
    assert picked not in page.eval_on_selector_all(
        "#results tbody tr", "rows => rows.map(r => r.dataset.clipId)"
    )

    # "Search from here" on a result.
    second = page.get_attribute("#results tbody tr:nth-child(2)", "data-clip-id")
    page.click("#results tbody tr:nth-child(2) button.search-from")
    wait_until(lambda: second in page.inner_text("#results-summary"), what="search from here")

    # A clip-id query's window is the query clip's own offset, not 0.0.
    later = next(cid for cid in stored if site.clips[cid]["offset_s"] > 0)
    page.evaluate("id => searchClip(id)", later)
    wait_until(lambda: later in page.inner_text("#results-summary"), what="search from a clip")
    window = page.inner_text("#results tbody tr:first-child td:first-child")
    assert window == f"{site.clips[later]['offset_s']:.1f}"

    assert errors == []
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000
    page.context.close()


@needs_browser
def test_microphone_recording_becomes_a_query(browser: Any, site: Site) -> None:
    page, errors = open_page(browser, site)
    page.fill("#k", "3")
    page.select_option("#windows", "strongest")  # one query window, however long the take
    page.click("#record")
    page.wait_for_selector("#record.recording")
    page.wait_for_timeout(2500)
    with page.expect_response(lambda r: r.url.endswith("/v1/search/audio")) as upload:
        page.click("#record")
    assert "multipart/form-data" in upload.value.request.headers["content-type"]
    assert upload.value.status == 200, upload.value.text()
    page.wait_for_selector("#results[data-count='3']", timeout=60_000)
    assert "recording.webm" in page.inner_text("#results-summary")  # MediaRecorder's own
    assert errors == []
    page.context.close()


def test_umap_map_is_computed_in_the_background(site: Site) -> None:
    """Started by the fixture; 202 with Retry-After until ready, then every stored clip."""
    with site.client() as c:

        def ready() -> dict[str, Any] | None:
            reply = c.get("/v1/map", params={"method": "umap"})
            if reply.status_code == 202:
                assert reply.json()["status"] == "computing" and reply.headers["retry-after"]
                return None
            assert reply.status_code == 200, reply.text
            return reply.json()

        umap = wait_until(ready, timeout_s=600, what="the UMAP map")
        assert umap["method"] == "umap" and set(umap["clip_ids"]) == site.stored()
        assert min(umap["x"]) == 0.0 and max(umap["x"]) == 1.0
        assert c.get("/v1/map/info").json()["maps"]["umap"] == "ready"
