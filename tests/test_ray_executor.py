"""Executor ``ray``: ``feast materialize`` with the embedding step as Ray Data batch inference.

One real local Ray (``ray.init(num_cpus=2)``) serves the whole module: the engine joins
the session this process holds, and the ``feast`` CLI in a subprocess joins it by address,
as it would join a cluster started with ``ray start --head``. Every result is compared
with the local executor's on the same registrations.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import soundfile as sf
import yaml

from hear_features.encoders.vit import VitShape, build_vit
from hear_features.errors import ConfigError
from hear_features.featurestore.config import HearEngineConfig
from hear_features.featurestore.ray_executor import RayEmbedding, recording_blocks
from hear_features.featurestore.registration import recordings_from_inputs, register
from hear_features.featurestore.repo import open_store
from tests.conftest import T1, end_time, feast, make_repo

pytestmark = pytest.mark.slow

RECORDINGS = 24
SECONDS = 7.0
BATCH = 4


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real WAV and FLAC files: noise bursts over tones, a few 2 s clips each."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    rng = np.random.default_rng(11)
    t = np.arange(round(SECONDS * 16_000)) / 16_000
    for i in range(RECORDINGS):
        x = 0.05 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * (150 + 37 * i) * t)
        ext = "flac" if i % 3 == 0 else "wav"
        sf.write(folder / f"rec{i:02d}.{ext}", x.astype(np.float32), 16_000)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ViT with HeAR's signature: about 40 ms a clip here, so that batches are
    still queued on a worker when its first one comes back."""
    folder = tmp_path_factory.mktemp("ray-model")
    return build_vit(folder / "vit", VitShape(layers=4, hidden=384, heads=6, mlp=1536))


def repo_with(root: Path, model: Path, corpus: Path, **engine: Any) -> Path:
    """A registered and applied copy of feature_repo/ whose batch_engine has ``engine``."""
    repo = make_repo(root, model)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"].update({"batch_size": BATCH, **engine})
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    recordings, _ = recordings_from_inputs([str(corpus)], {"label": "cough"})
    register(recordings, repo / "data" / "registrations.parquet", now=T1)
    feast(repo, "apply")
    return repo


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model: Path, corpus: Path) -> Path:
    """The corpus materialised by the local executor."""
    repo = repo_with(tmp_path_factory.mktemp("local") / "repo", model, corpus)
    materialise_here(repo)
    return repo


def materialise_here(repo: Path) -> Any:
    """``materialize_incremental`` in this process; returns the batch engine Feast built."""
    store = open_store(repo)
    store.materialize_incremental(end_date=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    return store._get_provider().batch_engine


def embeddings(repo: Path) -> pa.Table:
    return pq.read_table(repo / "data" / "embeddings.parquet").sort_by(
        [("clip_id", "ascending"), ("event_timestamp", "ascending")]
    )


def assert_same_vectors(ray_repo: Path, local_repo: Path) -> int:
    """Both executors stored the same rows and vectors offline and online; returns the
    number of clips."""
    ours, theirs = embeddings(ray_repo), embeddings(local_repo)
    reg = pq.read_table(ray_repo / "data" / "registrations.parquet")
    assert ours.num_rows == reg.num_rows  # one row per registration row: none lost
    assert len(set(ours["clip_id"].to_pylist())) == ours.num_rows  # none duplicated
    for column in ("clip_id", "recording_id", "offset_s", "event_timestamp", "model_id"):
        assert ours[column].to_pylist() == theirs[column].to_pylist(), column
    np.testing.assert_allclose(
        np.stack(ours["embedding"].to_numpy(zero_copy_only=False)),
        np.stack(theirs["embedding"].to_numpy(zero_copy_only=False)),
        atol=1e-5,
    )
    clip_ids = ours["clip_id"].to_pylist()
    online = [
        open_store(repo)
        .get_online_features(
            features=["cough_embeddings:embedding"],
            entity_rows=[{"clip_id": c} for c in clip_ids],
        )
        .to_dict()["embedding"]
        for repo in (ray_repo, local_repo)
    ]
    np.testing.assert_allclose(np.array(online[0]), np.array(online[1]), atol=1e-5)
    return len(clip_ids)


def test_recordings_are_never_split_across_blocks() -> None:
    rows = [
        {
            "clip_id": f"{uri}-{k}",
            "recording_id": uri,
            "audio_uri": uri,
            "offset_s": 1.8 * k,
            "content_hash": "h",
        }
        for uri, n in (("a", 3), ("b", 2), ("c", 9), ("d", 1), ("e", 1))
        for k in range(n)
    ]
    blocks = recording_blocks(rows, 4)
    assert [b["audio_uri"].to_pylist() for b in blocks] == [
        ["a"] * 3,
        ["b"] * 2,
        ["c"] * 9,  # longer than a block: a block of its own
        ["d", "e"],
    ]
    assert sum(b.num_rows for b in blocks) == len(rows)


def test_misspelt_executor_is_a_config_error_naming_the_choices(
    tmp_path: Path, model: Path
) -> None:
    with pytest.raises(ConfigError, match=r"executor 'rya' is not one of local, ray"):
        HearEngineConfig(executor="rya")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        HearEngineConfig(executor="ray", workers=0)
    # From feature_store.yaml, when Feast builds the engine to materialise.
    repo = make_repo(tmp_path / "repo", model)
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"]["executor"] = "rya"
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=r"executor 'rya' is not one of local, ray"):
        materialise_here(repo)


def test_feast_cli_on_a_running_ray_stores_the_local_engines_vectors(
    tmp_path: Path, model: Path, corpus: Path, reference: Path, ray_address: str
) -> None:
    on_ray = repo_with(
        tmp_path / "ray",
        model,
        corpus,
        executor="ray",
        ray_address=ray_address,  # joined like a cluster started with `ray start --head`
        workers=2,
        cpus_per_worker=1,
    )
    out = feast(on_ray, "materialize-incremental", end_time()).stdout
    clips = assert_same_vectors(on_ray, reference)
    assert f"embedded {clips} clips" in out and f"{clips} rows written online" in out


class Killer(logging.Handler):
    """Kills (SIGKILL) the Ray worker that answered the first batch, while it still holds
    queued batches: the pid comes from the worker's own name (``host:pid``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.killed: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.killed is not None or "clips back from Ray worker" not in record.msg:
            return
        worker = record.args[1][0]  # type: ignore[index]
        pid = int(worker.rsplit(":", 1)[1])
        process = psutil.Process(pid)
        assert "EncoderActor" in " ".join(process.cmdline())  # a Ray actor of this run
        os.kill(pid, signal.SIGKILL)
        self.killed = pid


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, model: Path, corpus: Path, reference: Path, ray_address: str
) -> None:
    on_ray = repo_with(
        tmp_path / "ray", model, corpus, executor="ray", workers=2, cpus_per_worker=1
    )
    logger = logging.getLogger("hear_features.featurestore.ray_executor")
    killer = Killer()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(killer)
    try:
        engine = materialise_here(on_ray)
    finally:
        logger.removeHandler(killer)
        logger.setLevel(level)
    clips = assert_same_vectors(on_ray, reference)

    assert killer.killed is not None and not alive(killer.killed)
    embedding = engine.embedder.embedding
    assert isinstance(embedding, RayEmbedding)
    answered = embedding.last_run.clips_per_worker
    assert sum(answered.values()) == clips
    pids = {int(worker.rsplit(":", 1)[1]) for worker in answered}
    # The killed worker answered before it died; its queued batches were retried by the
    # actor Ray restarted in its place (a new process), next to the other worker.
    assert killer.killed in pids and len(pids) == 3, answered
