"""Make docs/explorer.png, the README's picture of the explorer page.

    .venv/bin/python scripts/explorer_screenshot.py [--out docs/explorer.png]

Builds a synthetic corpus (the demo's generator), registers and materialises it with the
stand-in encoder through the stock CLIs, serves it, waits for the UMAP map, and has the
system Chromium (see tests/browser.py) upload a cough, play its nearest neighbour and take
the picture. About two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from hear_features.encoders import build_standin
from hear_features.synthetic import cough, write_corpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' browser helper and server launcher
from tests.browser import chromium, why_no_browser  # noqa: E402
from tests.support.launch import launch, stop  # noqa: E402


def run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)


def build_repo(work: Path) -> Path:
    model = build_standin(work / "standin", seed=0)
    write_corpus(work / "corpus", subjects=6, per_label=3, seed=21)
    repo = work / "repo"
    repo.mkdir()
    (repo / "definitions.py").write_text((ROOT / "feature_repo" / "definitions.py").read_text())
    yaml = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(yaml.replace("model: google/hear", f"model: {model}"))
    bin_dir = Path(sys.executable).parent
    manifest = work / "corpus" / "manifest.csv"
    register = [sys.executable, "-m", "hear_features", "register", str(manifest)]
    run(*register, "--repo", str(repo), cwd=work)
    run(str(bin_dir / "feast"), "apply", cwd=repo)
    end = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    run(str(bin_dir / "feast"), "materialize-incremental", end, cwd=repo)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    args = parser.parse_args()
    reason = why_no_browser()
    if reason:
        sys.exit(f"cannot take the screenshot: {reason}")
    with tempfile.TemporaryDirectory(prefix="explorer-shot-") as tmp:
        work = Path(tmp)
        repo = build_repo(work)
        query = work / "query.wav"
        sf.write(query, cough(np.random.default_rng(5), 16_000, subject=2, seconds=2.0), 16_000)
        process, url = launch(repo)
        try:
            deadline = time.monotonic() + 900
            umap = {"method": "umap"}
            while httpx.get(f"{url}/v1/map", params=umap, timeout=60).status_code != 200:
                if time.monotonic() > deadline:
                    sys.exit("the UMAP map was not ready after 15 minutes")
                time.sleep(2)
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 980})
                page.goto(f"{url}/explorer")
                page.wait_for_selector("#map-status:has-text('UMAP')", timeout=60_000)
                page.fill("#k", "8")
                page.set_input_files("#file-input", str(query))
                page.wait_for_selector("#results[data-count='8']", timeout=60_000)
                page.click("#results tbody tr:first-child button.play")
                page.wait_for_selector("#results tbody tr:first-child audio[src]")
                deadline = time.monotonic() + 60
                while not page.evaluate(
                    "() => [...document.querySelectorAll('img.spectrogram')]"
                    ".every(i => i.complete && i.naturalWidth > 0)"
                ):
                    if time.monotonic() > deadline:
                        sys.exit("the spectrograms did not load")
                    time.sleep(0.1)
                page.wait_for_timeout(800)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
        finally:
            stop(process)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
