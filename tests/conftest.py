"""Shared fixtures: real audio files written with soundfile, and the stand-in model."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hear_features.synthetic import cough, write_corpus

# Keep every cache the code under test writes inside the test session's temp area.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = {
    "wav": "PCM_16",
    "flac": "PCM_24",
    "ogg": "VORBIS",
    "mp3": "MPEG_LAYER_III",
}

WriteAudio = Callable[..., Path]


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("cache")
    os.environ["HEAR_FEATURES_CACHE"] = str(cache / "hear-features")
    os.environ["HF_HOME"] = str(cache / "hf")
    os.environ.pop("HEAR_MODEL", None)


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * sr))).astype(np.float32)


@pytest.fixture
def write_audio(tmp_path: Path) -> WriteAudio:
    """write_audio(name, samples, sr, subtype=None) -> path of a real audio file."""

    def _write(name: str, samples: np.ndarray, sr: int, subtype: str | None = None) -> Path:
        path = tmp_path / name
        ext = path.suffix.lstrip(".").lower()
        sf.write(path, samples, sr, subtype=subtype or FORMATS.get(ext))
        return path

    return _write


@pytest.fixture(scope="session")
def standin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hear_features.encoders import build_standin

    return build_standin(tmp_path_factory.mktemp("models") / "standin", seed=0)


@pytest.fixture(scope="session")
def encoder(standin_dir: Path):  # type: ignore[no-untyped-def]
    from hear_features.encoders import HearEncoder
    from hear_features.encoders.resolve import local_model

    return HearEncoder(local_model(standin_dir), batch_size=16, device="cpu")


# ---- Feast repositories -------------------------------------------------------------

REPO_TEMPLATE = Path(__file__).resolve().parents[1] / "feature_repo"
FEAST = Path(sys.executable).with_name("feast")


def make_repo(target: Path, model: str | Path) -> Path:
    """A copy of feature_repo/ (definitions + yaml) in ``target`` using ``model``."""
    import yaml

    target.mkdir(parents=True)
    for path in REPO_TEMPLATE.glob("*.py"):
        shutil.copy2(path, target / path.name)
    config = yaml.safe_load((REPO_TEMPLATE / "feature_store.yaml").read_text())
    config["batch_engine"]["model"] = str(model)
    (target / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def feast(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real `feast` CLI of this environment in ``repo``."""
    env = {k: v for k, v in os.environ.items() if k != "HEAR_MODEL"}
    proc = subprocess.run(
        [str(FEAST), *args], cwd=repo, capture_output=True, text=True, timeout=600, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"feast {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def hear_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `hear-features` CLI in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "HEAR_MODEL"}
    return subprocess.run(
        [sys.executable, "-m", "hear_features", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


# ---- one registered, applied and materialised repository, shared by the Feast tests ----

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T1 = NOW - dt.timedelta(days=20)
T2 = NOW - dt.timedelta(days=10)
T3 = NOW - dt.timedelta(days=5)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def end_time() -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S")


def state(repo: Path) -> dict:
    return json.loads((repo / "data" / "embeddings.parquet.state.json").read_text())


def register(repo: Path, *args: str) -> None:
    proc = hear_cli("register", *args, "--repo", str(repo))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class Workflow:
    repo: Path
    corpus: Path
    changed: str  # audio path whose label changes at T2
    late: Path  # recording first registered at T3
    first: str  # output of the first materialize
    second: str  # output of the second
    stderr: str = ""  # what `feast apply` and both materializations wrote to stderr


@pytest.fixture(scope="session")
def workflow(tmp_path_factory: pytest.TempPathFactory, standin_dir: Path) -> Workflow:
    root = tmp_path_factory.mktemp("workflow")
    corpus = root / "corpus"
    items = write_corpus(corpus, subjects=2, per_label=1, seed=3)
    repo = make_repo(root / "repo", standin_dir)
    register(repo, str(corpus / "manifest.csv"), "--timestamp", iso(T1))

    changed = items[0]  # subject 0's cough
    assert changed.label == "cough"
    relabel = root / "relabel.csv"
    relabel.write_text(
        f"path,label,subject_id,dataset,device\n{changed.path},cough-wet,subject-0,synthetic,simulated\n"
    )
    register(repo, str(relabel), "--timestamp", iso(T2))

    late = root / "late" / "late_cough.wav"
    late.parent.mkdir()
    sf.write(late, cough(np.random.default_rng(42), 16_000, subject=1).astype(np.float32), 16_000)
    register(repo, str(late), "--label", "cough", "--subject", "subject-9", "--timestamp", iso(T3))

    runs = [
        feast(repo, "apply"),
        feast(repo, "materialize-incremental", end_time()),
        feast(repo, "materialize-incremental", end_time()),
    ]
    stderr = "".join(run.stderr for run in runs)
    return Workflow(repo, corpus, str(changed.path), late, runs[1].stdout, runs[2].stdout, stderr)
