"""The Hugging Face path without network: a hand-made offline cache and a loopback fake hub.

huggingface_hub reads HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT when it is imported, so
each case runs the CLI or the loader in a fresh process with its own environment, the
way a user would meet it.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hear_features.encoders.standin import MARKER_FILE
from tests.conftest import WriteAudio, noise

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run_py(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=180
    )


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys; sys.argv = ['hear-features', *{args!r}]\n"
        "from hear_features.cli import app\napp()"
    )
    return run_py(code, env)


@pytest.fixture
def hf_cache(tmp_path: Path, standin_dir: Path) -> Path:
    """An HF_HOME whose hub cache holds google/hear at COMMIT (the stand-in's files)."""
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--google--hear"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(standin_dir, snapshot, ignore=shutil.ignore_patterns(MARKER_FILE))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no trailing newline, as the hub writes it
    return home


def test_cached_hub_model_loads_offline(hf_cache: Path) -> None:
    result = run_py(
        "from hear_features.encoders import HearEncoder; import numpy as np\n"
        "e = HearEncoder.load('google/hear', device='cpu')\n"
        "print(e.model_id, e.is_standin, e.encode(np.zeros((1, 32000), 'float32')).shape)",
        {"HF_HOME": str(hf_cache), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert f"google/hear@{COMMIT} False (1, 512)" in result.stdout


def test_offline_with_nothing_cached_says_so(tmp_path: Path, write_audio: WriteAudio) -> None:
    audio = write_audio("a.wav", noise(1, 16_000), 16_000)
    result = run_cli(
        ["embed", str(audio), "--out", str(tmp_path / "o.parquet")],
        {"HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "google/hear is not in the local Hugging Face cache" in err
    assert "local SavedModel directory" in err and "'standin'" in err
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.parquet").exists()


class _GatedHub(http.server.BaseHTTPRequestHandler):
    status = 401

    def _refuse(self) -> None:
        body = b'{"error": "Access to model google/hear is restricted."}'
        self.send_response(self.status)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model google/hear is restricted.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _refuse

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[401, 403])
def gated_hub(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_GatedHub,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_gated_repo_without_access_explains_how_to_get_it(
    tmp_path: Path, gated_hub: str, write_audio: WriteAudio
) -> None:
    audio = write_audio("a.wav", noise(1, 16_000), 16_000)
    result = run_cli(
        ["embed", str(audio), "--out", str(tmp_path / "o.parquet"), "--model", "google/hear"],
        {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": gated_hub, "HF_HUB_ETAG_TIMEOUT": "5"},
    )
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "google/hear is a gated repository" in err
    assert "accept the Health AI Developer Foundations terms" in err
    assert "HF_TOKEN" in err and "'standin'" in err
    assert "Traceback" not in result.stderr
