"""Keep-alive connections spread over uvicorn workers (hear_features.api.balance)."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hear_features.api.balance import (
    MAX_GAP_S,
    MIN_GAP_S,
    PREFIX,
    SLOT_BYTES,
    TABLE_ENV,
    ConnectionTable,
    shared_table,
)

#: A process that claims a slot, prints it, and holds it until its stdin closes.
CLAIM = (
    "import sys; from pathlib import Path; from hear_features.api.balance import "
    "ConnectionTable; t = ConnectionTable(Path(sys.argv[1])); print(t.slot, flush=True); "
    "sys.stdin.read()"
)


def dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


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


def test_one_worker_has_no_table_even_one_named_in_its_environment(tmp_path: Path) -> None:
    os.environ[TABLE_ENV] = str(tmp_path / "inherited")
    with shared_table(1) as path:
        assert path is None and TABLE_ENV not in os.environ


def test_tables_of_killed_servers_are_removed_by_the_next(tmp_path: Path) -> None:
    folder = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    orphan = folder / f"{PREFIX}{dead_pid()}-abc"
    alive = folder / f"{PREFIX}{os.getpid()}-abc"
    for f in (orphan, alive):
        f.write_bytes(bytes(2 * SLOT_BYTES))
    try:
        with shared_table(2) as path:
            assert path is not None and path.read_bytes() == bytes(2 * SLOT_BYTES)
            assert path.name.startswith(f"{PREFIX}{os.getpid()}-")
        assert not orphan.exists() and alive.exists()
    finally:
        orphan.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)


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
        slots = memoryview(shared).cast("q")  # pid, count per slot
        other_slot = 1 - table.slot
        slots[2 * other_slot], slots[2 * other_slot + 1] = os.getppid(), other
        assert table.counts() == ([mine, other] if table.slot == 0 else [other, mine])
        assert table.over_share() is sheds
        # the other worker gone (its process), its count left behind: this worker is
        # the only one, with nowhere better to send a connection
        slots[2 * other_slot] = dead_pid()
        assert table.over_share() is False
        slots.release()
    table.closed()
    assert table.counts()[table.slot] == max(0, mine - 1)


def test_a_table_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "table"
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="not a connection table"):
        ConnectionTable(path)


def test_shedding_backs_off_while_shed_connections_come_back(tmp_path: Path) -> None:
    path = tmp_path / "table"
    path.write_bytes(bytes(2 * SLOT_BYTES))
    table = ConnectionTable(path)
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 2 * SLOT_BYTES) as shared:
        slots = memoryview(shared).cast("q")
        slots[2 * (1 - table.slot)] = os.getppid()  # a live other worker, no connections
        for _ in range(8):
            table.opened()
        assert table.should_shed(0.0)
        assert not table.should_shed(0.01)  # one per MIN_GAP_S
        gaps = []
        last = 0.0
        for step in range(400):  # each shed connection comes straight back
            now = step * 0.05
            if table.should_shed(now):
                gaps.append(round(now - last, 2))
                last = now
        assert gaps[:5] == [0.05, 0.1, 0.2, 0.4, 0.8] and max(gaps) <= MAX_GAP_S + 0.05
        # a shed that worked (the connection went elsewhere): back to the short gap
        table.closed()
        assert table.should_shed(100.0) and not table.should_shed(100.0 + MIN_GAP_S / 2)
        table.closed()
        assert table.should_shed(100.0 + MIN_GAP_S)
        slots.release()
