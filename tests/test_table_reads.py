"""Reading the offline tables while they are replaced, and paths DuckDB would misread.

A writer renames a new table over the old one; DuckDB reopens a file by name (per thread)
during one read, so it can read pieces of both. ``tables.snapshot`` gives it the file
opened once; ``tables.reading`` holds replacements off for readers that must use the
path (Feast's offline store). DuckDB also reads meaning into paths (``KEY=VALUE``
folders, glob characters): such table paths are refused."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hear_features.errors import ConfigError, LockTimeout
from hear_features.featurestore.tables import (
    check_table_path,
    reading,
    snapshot,
    write_table,
)
from hear_features.featurestore.training import training_set
from tests.conftest import Workflow, hear_cli, make_repo


def labels(name: str, **options: str) -> list[str]:
    extra = "".join(f", {k} = {v}" for k, v in options.items())
    query = f"SELECT label FROM read_parquet(?{extra}) ORDER BY label"
    return [r[0] for r in duckdb.execute(query, [name]).fetchall()]


def test_a_snapshot_reads_the_file_as_opened_whatever_its_path_says(tmp_path: Path) -> None:
    folder = tmp_path / "label=from-the-folder"
    folder.mkdir()
    path = folder / "t.parquet"
    write_table(path, pa.table({"label": ["a", "b"]}))
    assert labels(str(path)) == ["from-the-folder"] * 2  # what DuckDB does with the path
    with snapshot(path) as name:
        write_table(path, pa.table({"label": ["new"]}))  # replaced meanwhile
        assert labels(name) == ["a", "b"]  # the stored values, of the version opened
        assert pq.read_table(name)["label"].to_pylist() == ["a", "b"]
    with snapshot(path) as name:
        assert labels(name) == ["new"]
    with pytest.raises(FileNotFoundError):
        snapshot(tmp_path / "missing.parquet").__enter__()


def test_a_replacement_waits_for_the_readers(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_table(path, pa.table({"label": ["old"]}))
    done = threading.Event()

    def replace() -> None:
        write_table(path, pa.table({"label": ["new"]}))
        done.set()

    with reading(path), reading(path):  # readers share the lock
        writer = threading.Thread(target=replace)
        writer.start()
        time.sleep(0.5)
        assert not done.is_set() and pq.read_table(path)["label"].to_pylist() == ["old"]
        with pytest.raises(LockTimeout, match="being read by other processes"):
            write_table(path, pa.table({"label": ["other"]}), timeout_s=0)
    writer.join(timeout=30)
    assert done.is_set() and pq.read_table(path)["label"].to_pylist() == ["new"]


@pytest.mark.parametrize(
    ("folder", "problem"),
    [("label=cough", "partition column"), ("study [v2]", "glob character"), ("a*b", "glob")],
)
def test_table_paths_duckdb_would_misread_are_refused(
    tmp_path: Path, folder: str, problem: str
) -> None:
    columns = {"clip_id", "label"}
    check_table_path(tmp_path / "plain" / "data" / "embeddings.parquet", columns)
    check_table_path(tmp_path / "run=1" / "data" / "embeddings.parquet", columns)  # no column
    with pytest.raises(ConfigError, match=problem):
        check_table_path(tmp_path / folder / "data" / "embeddings.parquet", columns)


def test_a_key_value_folder_named_like_a_column_of_the_file_is_refused(tmp_path: Path) -> None:
    """A column the file holds but nobody declared (a study column no longer declared)
    counts too."""
    path = tmp_path / "site=north" / "t.parquet"
    write_table(path, pa.table({"clip_id": ["a"], "site": ["south"]}))
    with pytest.raises(ConfigError, match="'site' as 'north'"):
        check_table_path(path, {"clip_id"})


def test_a_repository_under_a_partition_like_folder_is_refused_by_commands(
    tmp_path: Path, standin_dir: Path
) -> None:
    repo = make_repo(tmp_path / "dataset=coswara" / "repo", standin_dir)
    audio = Path(__file__).parent  # any path: the table path is checked first
    proc = hear_cli("register", str(audio), "--repo", str(repo))
    assert proc.returncode != 0
    assert "'dataset=coswara'" in proc.stderr and "partition column" in proc.stderr


def test_ids_that_are_not_utf8_are_unknown(workflow: Workflow) -> None:
    import pandas as pd

    from hear_features.errors import UnknownClipError
    from hear_features.featurestore.repo import open_store

    entities = pd.DataFrame({"clip_id": ["\ud800bad"], "event_timestamp": ["2026-01-01T00:00:00Z"]})
    with pytest.raises(UnknownClipError, match=r"1 unknown clip id\(s\).*\\ud800bad"):
        training_set(open_store(workflow.repo), entities)


def test_a_missing_embeddings_table_is_named(workflow: Workflow) -> None:
    import pandas as pd

    from hear_features.featurestore.repo import open_store, tables

    store = open_store(workflow.repo)
    table = tables(store).embeddings
    ids = pq.read_table(table, columns=["clip_id"])["clip_id"].to_pylist()[:2]
    entities = pd.DataFrame(
        {"clip_id": ids, "event_timestamp": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]}
    )
    moved = table.with_name("moved-away.parquet")
    table.rename(moved)
    try:
        with pytest.raises(ConfigError, match=r"embeddings table .* does not exist"):
            training_set(store, entities)
    finally:
        moved.rename(table)


def test_a_damaged_page_is_an_error_not_a_value(tmp_path: Path) -> None:
    """Pages carry CRC-32 checksums: one flipped byte inside the data is refused when the
    project reads the table, instead of coming back as a different number."""
    import numpy as np

    from hear_features.featurestore.tables import read_table

    path = tmp_path / "t.parquet"
    schema = pa.schema([("x", pa.float32())])
    write_table(path, pa.table({"x": pa.array(np.arange(100_000, dtype=np.float32))}))
    assert read_table(path, schema)["x"][5].as_py() == 5.0
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"cannot be read .*CRC"):
        read_table(path, schema)


def test_a_training_set_during_a_materialisation_is_refused_in_words(
    workflow: Workflow, tmp_path: Path
) -> None:
    """Feast reads no rows of a view marked as being materialised; the project says so
    (and the one-timestamp read, which does not go through Feast, still answers)."""
    import shutil

    import pandas as pd
    from feast.feature_view import FeatureViewState

    from hear_features.featurestore.repo import open_store, tables
    from tests.conftest import feast

    repo = tmp_path / "repo"
    shutil.copytree(workflow.repo, repo, ignore=shutil.ignore_patterns("*.lock"))
    feast(repo, "apply")
    store = open_store(repo)
    view = store.get_feature_view("cough_embeddings")
    view.state = FeatureViewState.MATERIALIZING
    store.registry.apply_feature_view(view, store.project)
    ids = pq.read_table(tables(store).embeddings, columns=["clip_id"])["clip_id"].to_pylist()[:2]
    two = pd.DataFrame(
        {"clip_id": ids, "event_timestamp": ["2100-01-01T00:00:00Z", "2100-01-02T00:00:00Z"]}
    )
    with pytest.raises(LockTimeout, match="being materialised"):
        training_set(open_store(repo), two)
    from hear_features.probe.selection import from_store

    with pytest.raises(LockTimeout, match="cough_embeddings is being materialised"):
        from_store(open_store(repo))  # the probe reads every view through Feast
    one = two.assign(event_timestamp="2100-01-01T00:00:00Z")
    assert training_set(open_store(repo), one)["embedding"].notna().all()
