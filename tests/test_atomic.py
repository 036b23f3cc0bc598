"""Atomic replacement keeps the file's permissions: a new file gets what ``open()`` would
give it, a replaced one keeps its own (a lab sharing a repository by group permissions
must not lose read access after each write)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hear_features.atomic import atomic_write_bytes


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_a_new_file_gets_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    atomic_write_bytes(target, b"one")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what open() gives under the same umask
    assert mode(target) == mode(plain) == 0o644

    target.chmod(0o640)  # shared with the group, not the world
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and mode(target) == 0o640

    os.umask(0o077)  # a private umask is honoured for new files
    private = tmp_path / "private.json"
    atomic_write_bytes(private, b"{}")
    assert mode(private) == 0o600
