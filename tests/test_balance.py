"""Keep-alive connections spread over uvicorn workers (hear_features.api.balance)."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hear_features.api.balance import SLOT_BYTES, TABLE_ENV, ConnectionTable, shared_table

#: A process that claims a slot, prints it, and holds it until its stdin closes.
CLAIM = (
    "import sys; from pathlib import Path; from hear_features.api.balance import "
    "ConnectionTable; t = ConnectionTable(Path(sys.argv[1])); print(t.slot, flush=True); "
    "sys.stdin.read()"
)


def claimer(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_each_worker_claims_its_own_slot_and_kill_9_frees_it() -> None:
    with shared_table(2) as path:
        assert path is not None and os.environ[TABLE_ENV] == str(path)
        assert path.stat().st_size == 2 * SLOT_BYTES
        first, second = claimer(path), claimer(path)
        slot_of = {p.pid: int(p.stdout.readline()) for p in (first, second)}  # type: ignore[union-attr]
        assert sorted(slot_of.values()) == [0, 1]
        third = claimer(path)
        _, err = third.communicate(timeout=60)
        assert third.returncode != 0 and "all 2 slots of the connection table are held" in err
        first.send_signal(signal.SIGKILL)
        first.wait()
        replacement = claimer(path)
        assert int(replacement.stdout.readline()) == slot_of[first.pid]  # type: ignore[union-attr]
        for p in (second, replacement):
            p.communicate(input="", timeout=60)
    assert not path.exists() and TABLE_ENV not in os.environ


def test_one_worker_has_no_table() -> None:
    with shared_table(1) as path:
        assert path is None and TABLE_ENV not in os.environ


@pytest.mark.parametrize(
    ("mine", "other", "sheds"),
    [
        (16, 0, True),  # all on this worker: shed
        (9, 7, True),  # share 8, two more than the other
        (5, 4, False),  # share 5: within it
        (6, 5, False),  # over the share by one, but only one more than the other
        (1, 0, False),  # one connection: nowhere better to go
        (0, 0, False),
    ],
)
def test_a_worker_sheds_only_beyond_its_share(
    tmp_path: Path, mine: int, other: int, sheds: bool
) -> None:
    path = tmp_path / "table"
    path.write_bytes(bytes(2 * SLOT_BYTES))
    table = ConnectionTable(path)
    for _ in range(mine):
        table.opened()
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 2 * SLOT_BYTES) as shared:
        counts = memoryview(shared).cast("q")
        counts[1 - table.slot] = other
        assert table.counts()[table.slot] == mine
        assert table.over_share() is sheds
        counts.release()
    table.closed()
    assert table.counts()[table.slot] == max(0, mine - 1)


def test_a_table_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "table"
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a connection table"):
        ConnectionTable(path)
