"""The search service's cached registry state never serves a stale answer.

:class:`~hear_features.featurestore.search.ClipSearch` keeps what it derives from the
registry (the view, its fields, the index binding) until the registry file changes.
These tests change the store and the registry underneath one long-lived search service,
the way a running API sees them: clips written by another process, a clip re-labelled,
``feast apply`` adding a field, and the explicit :func:`invalidate_searches` hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hear_features.errors import InputShapeError
from hear_features.featurestore import search as search_module
from hear_features.featurestore.registry_watch import RegistryWatch
from hear_features.featurestore.repo import open_store
from hear_features.featurestore.search import (
    ClipSearch,
    clip_id_of,
    invalidate_searches,
    similar_clips,
)
from tests.support import shipped_repo
from tests.support.vectors import clustered_vectors

N = 300
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, standin_dir: Path) -> Path:
    path = shipped_repo.make_repo(tmp_path_factory.mktemp("cache") / "repo", standin_dir)
    shipped_repo.fill(path, N, seed=7)
    return path


def write_elsewhere(repo: Path, first: int, vectors: np.ndarray, label: str) -> None:
    """Write clips from another process, as `feast materialize` would."""
    np.save(repo / "new.npy", vectors)
    code = (
        "import sys, numpy as np; from pathlib import Path; "
        "from tests.support.shipped_repo import write; "
        f"write(Path(sys.argv[1]), {first}, np.load(sys.argv[1] + '/new.npy'), label={label!r})"
    )
    subprocess.run([sys.executable, "-c", code, str(repo)], cwd=ROOT, check=True, timeout=300)


def test_clips_written_by_another_process_are_found_at_once(repo: Path) -> None:
    store = open_store(repo)
    query = clustered_vectors(1, 512, seed=99)[0]
    before = similar_clips(store, query, 3)  # binds and caches the view
    assert len(before) == 3 and all(h["clip_id"] != shipped_repo.clip_id(N) for h in before)

    write_elsewhere(repo, N, query[None], "wheeze")
    (top, *_) = similar_clips(store, query, 3)
    assert top["clip_id"] == shipped_repo.clip_id(N)
    assert top["label"] == "wheeze" and top["distance"] == pytest.approx(0.0, abs=1e-5)

    # Re-labelled (a newer event for the same clip): the hit shows the new label.
    write_elsewhere(repo, N, query[None], "cough")
    (top, *_) = similar_clips(store, query, 3)
    assert (top["clip_id"], top["label"]) == (shipped_repo.clip_id(N), "cough")


def test_feast_apply_is_seen_by_a_running_search_service(repo: Path) -> None:
    store = open_store(repo)
    search = ClipSearch(store)
    query = clustered_vectors(1, 512, seed=5)
    with pytest.raises(InputShapeError, match=r"no feature.*site"):
        search.search(query, 2, features=["site"])
    assert "site" not in {f.name for f in search.view.features}

    definitions = repo / "definitions.py"
    text = definitions.read_text()
    anchor = 'Field(name="model_id", dtype=String),'
    assert anchor in text
    definitions.write_text(text.replace(anchor, anchor + ' Field(name="site", dtype=String),', 1))
    subprocess.run([shipped_repo.feast_cli(), "apply"], cwd=repo, check=True, capture_output=True)

    # The same service object, no restart: the new field is known and served.
    assert "site" in {f.name for f in search.view.features}
    (row,) = search.search(query, 2, features=["site", "label"])
    assert len(row) == 2 and all("label" in m.features for m in row)


def test_invalidate_searches_rebinds_every_service(repo: Path) -> None:
    store = open_store(repo)
    search = ClipSearch(store)
    view = search.view
    assert search.view is view  # cached while the registry is unchanged
    search.search(clustered_vectors(1, 512, seed=3), 4)  # fills the clip-id cache
    assert search._clip_id.cache_info().currsize > 0
    invalidate_searches()  # what `forget` calls: no forgotten id stays in memory
    assert search._clip_id.cache_info().currsize == 0
    assert clip_id_of.cache_info().currsize == 0
    assert search.view is not view and search.view.name == view.name
    (row,) = search.search(clustered_vectors(1, 512, seed=3), 4)
    assert len(row) == 4


def test_a_registry_caught_mid_rewrite_keeps_the_last_good_view(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast rewrites the registry file in place (every `feast materialize` does): a
    search that reads it half-written answers from the view it had, for a while."""
    search = ClipSearch(open_store(repo))
    query = clustered_vectors(1, 512, seed=11)
    (before,) = search.search(query, 3)
    registry = repo / "data" / "registry.db"
    whole = registry.read_bytes()
    try:
        registry.write_bytes(whole[: len(whole) // 3])  # cut short, as read mid-write
        (during,) = search.search(query, 3)
        assert [m.clip_id for m in during] == [m.clip_id for m in before]
        monkeypatch.setattr(search_module, "REGISTRY_REWRITE_S", 0.0)
        with pytest.raises(Exception):  # noqa: B017 (Feast's parse error, whatever it is)
            search.search(query, 3)  # still unreadable past the grace time: an error
    finally:
        registry.write_bytes(whole)
    (after,) = search.search(query, 3)
    assert [m.clip_id for m in after] == [m.clip_id for m in before]


def test_registry_watch_token_changes_with_the_file(tmp_path: Path) -> None:
    registry = tmp_path / "data" / "registry.db"
    registry.parent.mkdir()
    registry.write_bytes(b"one")
    store_yaml = tmp_path / "feature_store.yaml"
    store_yaml.write_text(
        "project: p\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: sqlite\nentity_key_serialization_version: 3\n"
    )
    from feast import FeatureStore

    watch = RegistryWatch(FeatureStore(repo_path=str(tmp_path)).config)
    first = watch.token()
    assert watch.token() == first
    replacement = tmp_path / "data" / "new.db"
    replacement.write_bytes(b"two")  # same size, another inode
    os.replace(replacement, registry)
    assert watch.token() != first
    registry.unlink()
    assert watch.token() == (0,)


@pytest.mark.parametrize("clip_id", ["0000000000000001-00000000", "", "ünïcode-clip", "x" * 300])
def test_clip_ids_parse_as_feast_parses_them(repo: Path, clip_id: str) -> None:
    from feast.infra.key_encoding_utils import deserialize_entity_key

    search = ClipSearch(open_store(repo))
    key = search._encode_key(clip_id)
    feast_parsed = deserialize_entity_key(key, entity_key_serialization_version=3)
    assert search._decode_key(key) == feast_parsed.entity_values[0].string_val == clip_id
