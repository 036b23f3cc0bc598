"""Configuration: one device vocabulary, the index settings nested in the store's, and the
spellings of earlier versions still accepted with a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore
from feast.repo_config import RepoConfig
from hear_features.index import IndexConfig, Metric

from hear_features.defaults import MODEL_ENV
from hear_features.devices import parse_device, wants_gpu
from hear_features.errors import ConfigError, DeviceError
from hear_features.featurestore.config import (
    ENGINE_TYPE,
    STORE_TYPE,
    EncoderSettings,
    HearEngineConfig,
    engine_config,
)
from hear_features.featurestore.online_store import HearOnlineStoreConfig
from hear_features.featurestore.repo import Views, views


@pytest.mark.parametrize(("old", "new"), [("never", "cpu"), ("always", "gpu")])
def test_old_device_spellings_still_work_with_a_warning(old: str, new: str) -> None:
    with pytest.warns(FutureWarning, match=f"{old} is deprecated; write device: {new}"):
        assert parse_device(old) == new
    with pytest.warns(FutureWarning):
        assert IndexConfig(device=old).device == new


def test_one_device_vocabulary_for_encoder_and_index() -> None:
    assert [parse_device(d) for d in ("auto", "cpu", "gpu")] == ["auto", "cpu", "gpu"]
    with pytest.raises(DeviceError, match="unknown device 'tpu'; choose one of auto, cpu, gpu"):
        parse_device("tpu")
    assert wants_gpu("auto", 1, missing="-") and not wants_gpu("auto", 0, missing="-")
    assert not wants_gpu("cpu", 4, missing="-")
    with pytest.raises(DeviceError, match="none here"):
        wants_gpu("gpu", 0, missing="none here")


def test_index_settings_nest_in_the_store_config() -> None:
    config = HearOnlineStoreConfig(index={"factory": "HNSW32", "nprobe": 8, "device": "cpu"})
    assert config.index == IndexConfig(factory="HNSW32", nprobe=8, device="cpu")
    assert config.index.with_metric(Metric.L2).metric is Metric.L2
    assert config.index.with_metric(Metric.L2).factory == "HNSW32"
    with pytest.raises(ValueError, match="bogus"):
        HearOnlineStoreConfig(index={"bogus": 1})


def test_flat_index_keys_of_earlier_versions_still_work() -> None:
    with pytest.warns(FutureWarning, match="index_factory is deprecated"):
        config = HearOnlineStoreConfig(index_factory="Flat", use_gpu="never", mmap=True)
    assert config.index == IndexConfig(factory="Flat", device="cpu", mmap=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"recall_target": 1.5}, r"recall_target must be in \(0, 1\]"),
        ({"flat_threshold": -1}, "flat_threshold must be >= 0"),
        ({"nprobe": 0}, "nprobe must be >= 1"),
        ({"metric": "hamming"}, "unknown metric 'hamming'"),
    ],
)
def test_bad_index_settings_are_refused_with_a_message(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IndexConfig(**settings)


def repo_config(root: Path, batch_engine: Any) -> RepoConfig:
    return RepoConfig(
        project="p",
        provider="local",
        registry=str(root / "registry.db"),
        online_store={"type": STORE_TYPE, "path": str(root / "online.db")},
        batch_engine=batch_engine,
        entity_key_serialization_version=3,
        repo_path=root,
    )


def test_view_names_and_the_model_come_from_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = {
        "type": ENGINE_TYPE,
        "embeddings_view": "vectors",
        "registrations_view": "recordings",
        "model": "./models/hear",
        "batch_size": 8,
    }
    config = repo_config(tmp_path, section)
    store = FeatureStore(config=config)
    assert views(store) == Views(registrations="recordings", embeddings="vectors")
    (tmp_path / "models" / "hear").mkdir(parents=True)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    settings = EncoderSettings.from_repo_config(config)
    assert settings.model == str(tmp_path / "models" / "hear") and settings.batch_size == 8
    monkeypatch.setenv(MODEL_ENV, "standin")  # the environment wins over the YAML
    assert EncoderSettings.from_repo_config(config).model == "standin"
    # Another engine configured: this project's keys take their defaults.
    assert engine_config(repo_config(tmp_path, "local")) == HearEngineConfig()
