"""Shared fixtures: real audio files written with soundfile, and the stand-in model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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
