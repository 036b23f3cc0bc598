"""SIGKILL at random points of `register`, `feast materialize` and an index save.

After every kill the stores must still load (the tables read, the saved index loads
and verifies), hold either the old or the new state of each file, and never a partial
one; a re-run must then complete with counts that match the registration exactly: no
lost and no duplicated vectors. Two materialisations at once take turns (a file lock),
and one that cannot get the lock stops with a message naming the holder.

The kill points are random (seeded): half at a random moment of a run's measured
duration, half a random few milliseconds after the run starts writing (a temporary
file appears next to a store file), where a crash is most likely to do damage.
``HEAR_CRASH_REPEATS`` sets the kills per scenario (default 4; the report uses more).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from hear_features.index import IndexConfig, VectorIndex, load, save

from hear_features.locking import file_lock
from tests.bad_inputs import write_observation
from tests.conftest import FEAST, end_time, feast, make_repo
from tests.support.erasure import Traces, forget_command

pytestmark = pytest.mark.slow

REPEATS = int(os.environ.get("HEAR_CRASH_REPEATS", "4"))
TABLE = "hear_features_cough_embeddings"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HEAR_MODEL"}


@dataclass
class Kill:
    killed: bool  # False: the run finished before the kill came
    after_s: float
    trigger: str


def run_and_kill(
    cmd: list[str], cwd: Path, watch: list[Path], delay_s: float, trigger: str, rng: random.Random
) -> Kill:
    """Start ``cmd`` in its own process group and SIGKILL the group.

    ``trigger`` "time": after ``delay_s``. "write": a random 0-30 ms after a temporary
    file (``*.tmp*``) shows up in one of the ``watch`` folders, or at ``delay_s``.
    """

    def temp_files() -> set[Path]:
        return {
            p for folder in watch if folder.exists() for p in folder.rglob("*") if ".tmp" in p.name
        }

    stale = temp_files()  # strays of earlier kills do not count as "writing has started"
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = start + delay_s
    while proc.poll() is None and time.monotonic() < deadline:
        if trigger == "write" and temp_files() - stale:
            time.sleep(rng.uniform(0, 0.03))
            break
        time.sleep(0.003 if trigger == "write" else 0.01)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return Kill(killed, time.monotonic() - start, trigger)


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.monotonic() - start


def schedule(rng: random.Random, full_s: float) -> list[tuple[float, str]]:
    """REPEATS kill points: alternately a random time, and soon after writing starts."""
    return [
        (rng.uniform(0.15, 1.0) * full_s, "time") if i % 2 == 0 else (full_s * 1.5, "write")
        for i in range(REPEATS)
    ]


def write_recordings(folder: Path, n: int, seconds: float, seed: int) -> None:
    """``n`` distinct noisy recordings (bursts over noise), loud enough to keep every window."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sr = 16_000
    for i in range(n):
        x = 0.05 * rng.standard_normal(int(seconds * sr))
        for at in rng.uniform(0, seconds - 0.5, size=int(seconds)):
            s = int(at * sr)
            x[s : s + 4000] += 0.4 * rng.standard_normal(4000) * np.hanning(4000)
        sf.write(folder / f"rec_{i:03d}.flac", x.astype(np.float32), sr)


def register_cmd(repo: Path, *sources: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hear_features",
        "register",
        "--repo",
        str(repo),
        *map(str, sources),
    ]


def registration_keys(repo: Path) -> list[tuple[str, object]]:
    t = pq.read_table(
        repo / "data" / "registrations.parquet", columns=["clip_id", "event_timestamp"]
    )
    return list(zip(t["clip_id"].to_pylist(), t["event_timestamp"].to_pylist(), strict=True))


def embedding_keys(repo: Path) -> list[tuple[str, object]]:
    path = repo / "data" / "embeddings.parquet"
    t = pq.read_table(path, columns=["clip_id", "event_timestamp"])
    return list(zip(t["clip_id"].to_pylist(), t["event_timestamp"].to_pylist(), strict=True))


def online_state(repo: Path) -> tuple[int, int]:
    """(rows, rows with a vector) of the embeddings view in the online store."""
    with sqlite3.connect(repo / "data" / "online.db") as conn:
        rows, vectors = conn.execute(f'SELECT COUNT(*), COUNT(vector) FROM "{TABLE}"').fetchone()
    return int(rows), int(vectors)


def saved_index_count(repo: Path) -> int | None:
    folder = repo / "data" / "index" / TABLE
    if not (folder / "manifest.json").exists():
        return None
    index, generation, _ = load(folder, IndexConfig())  # verifies size, sha256 and ids
    assert len(index) == generation.count
    return len(index)


def observe(scenario: str, kills: list[Kill], final: str, ok: bool) -> None:
    landed = [k for k in kills if k.killed]
    write_observation(
        {
            "case": f"SIGKILL during {scenario}",
            "path": "crash",
            "expected": "stores load after every kill; the re-run completes with exact counts",
            "observed": f"{len(landed)} of {len(kills)} kills landed mid-run "
            f"({sum(k.trigger == 'write' for k in landed)} while writing), at "
            + ", ".join(f"{k.after_s:.2f} s" for k in landed)
            + f"; {final}",
            "stores_unchanged": None,
            "ok": ok,
        }
    )


# ---- register ---------------------------------------------------------------------------------


def test_sigkill_during_register(tmp_path: Path, standin_dir: Path) -> None:
    rng = random.Random(1)
    write_recordings(tmp_path / "first", 4, 20.0, seed=1)
    write_recordings(tmp_path / "second", 10, 30.0, seed=2)
    repo = make_repo(tmp_path / "repo", standin_dir)
    second = register_cmd(repo, tmp_path / "second")
    timed(register_cmd(repo, tmp_path / "first"), tmp_path)
    first = registration_keys(repo)

    reference = make_repo(tmp_path / "reference", standin_dir)
    full_s = timed(register_cmd(reference, tmp_path / "second"), tmp_path)
    expected_new = len(registration_keys(reference))

    kills = []
    for delay, trigger in schedule(rng, full_s):
        kills.append(run_and_kill(second, tmp_path, [repo / "data"], delay, trigger, rng))
        keys = registration_keys(repo)  # the table reads after every kill
        assert len(keys) == len(set(keys))
        assert len(keys) in (len(first), len(first) + expected_new), len(keys)
    timed(second, tmp_path)
    keys = registration_keys(repo)
    ok = len(keys) == len(set(keys)) == len(first) + expected_new
    observe(
        "hear-features register",
        kills,
        f"{len(keys)} registration rows, expected {len(first) + expected_new}, no duplicates",
        ok,
    )
    assert ok
    assert any(k.killed for k in kills)


# ---- feast materialize ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory, standin_dir: Path
) -> Callable[[str], Path]:
    """A factory of applied repositories holding the same registrations (not materialised)."""
    root = tmp_path_factory.mktemp("crash")
    write_recordings(root / "audio", 16, 30.0, seed=3)

    def make(name: str) -> Path:
        repo = make_repo(root / name, standin_dir)
        proc = subprocess.run(
            register_cmd(repo, root / "audio"),
            capture_output=True,
            text=True,
            env=_env(),
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        feast(repo, "apply")
        return repo

    return make


def assert_consistent_after_kill(repo: Path) -> None:
    """What must hold at any moment: readable tables, no duplicate rows, a loadable
    index no larger than the online table, and nothing online that was not registered."""
    registered = set(registration_keys(repo))
    stored = embedding_keys(repo)
    assert len(stored) == len(set(stored)), "duplicated embedding rows"
    assert set(stored) <= registered
    rows, vectors = online_state(repo)
    assert rows == vectors <= len({c for c, _ in registered})
    saved = saved_index_count(repo)
    assert saved is None or saved <= vectors


def test_sigkill_during_materialize(registered: Callable[[str], Path]) -> None:
    rng = random.Random(2)
    reference = registered("reference")
    full_s = timed([str(FEAST), "materialize-incremental", end_time()], reference)
    repo = registered("victim")
    cmd = [str(FEAST), "materialize-incremental", end_time()]
    kills = []
    for i, (delay, trigger) in enumerate(schedule(rng, full_s)):
        if i and not kills[-1].killed:
            # The last run finished everything: give the next one new work to be killed in.
            extra = repo.parent / f"victim-extra-{i}"
            write_recordings(extra, 8, 30.0, seed=100 + i)
            timed(register_cmd(repo, extra), repo)
        kills.append(run_and_kill(cmd, repo, [repo / "data"], delay, trigger, rng))
        assert_consistent_after_kill(repo)
    feast(repo, "materialize-incremental", end_time())
    registered_keys = set(registration_keys(repo))
    stored = embedding_keys(repo)
    clips = len({c for c, _ in registered_keys})
    rows, vectors = online_state(repo)
    saved = saved_index_count(repo)
    ok = (
        len(stored) == len(set(stored)) == len(registered_keys)
        and set(stored) == registered_keys
        and rows == vectors == clips
        and saved == clips
    )
    observe(
        "feast materialize-incremental",
        kills,
        f"{len(stored)} embedding rows for {len(registered_keys)} registrations, "
        f"{rows} online rows and {saved} indexed vectors for {clips} clips",
        ok,
    )
    assert ok, (len(stored), len(registered_keys), rows, vectors, saved, clips)
    # Same vectors as an uninterrupted run: nothing half-written survived.
    ref = pq.read_table(reference / "data" / "embeddings.parquet").to_pandas().set_index("clip_id")
    got = pq.read_table(repo / "data" / "embeddings.parquet").to_pandas().set_index("clip_id")
    for clip in ref.index[:50]:
        np.testing.assert_allclose(
            np.asarray(got.loc[clip, "embedding"]),
            np.asarray(ref.loc[clip, "embedding"]),
            atol=1e-5,
        )


def test_two_materializations_take_turns(registered: Callable[[str], Path]) -> None:
    repo = registered("concurrent")
    cmd = [str(FEAST), "materialize-incremental", end_time()]
    procs = [
        subprocess.Popen(
            cmd, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stored = embedding_keys(repo)
    assert len(stored) == len(set(stored)) == len(registration_keys(repo))
    # One of them embedded everything; the other waited and found nothing left to do.
    embedded = sorted(int(o.split("embedded ")[1].split()[0]) for o in outputs if "embedded " in o)
    assert embedded[0] == 0 and embedded[-1] == len(stored), outputs
    write_observation(
        {
            "case": "two feast materialize runs at once",
            "path": "concurrency",
            "expected": "the second waits for the lock; no duplicates",
            "observed": f"both exit 0; embedded {embedded}; {len(stored)} rows, no duplicates",
            "stores_unchanged": None,
            "ok": True,
        }
    )


def test_a_materialization_that_cannot_get_the_lock_stops_and_says_who_holds_it(
    registered: Callable[[str], Path],
) -> None:
    repo = registered("locked")
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["batch_engine"]["lock_timeout_s"] = 1
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    embeddings = repo / "data" / "embeddings.parquet"
    before = embeddings.read_bytes()
    with file_lock(embeddings, what="test"):
        proc = feast(repo, "materialize-incremental", end_time(), check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"being written by another process (pid {os.getpid()}" in message, message
    assert embeddings.read_bytes() == before
    write_observation(
        {
            "case": "feast materialize while another writer holds the lock",
            "path": "concurrency",
            "expected": "exit != 0 naming the holder; table unchanged",
            "observed": _line(message, "being written by another process"),
            "stores_unchanged": True,
            "ok": True,
        }
    )


def _line(text: str, needle: str) -> str:
    """The line of ``text`` holding ``needle``, temp paths shortened."""
    line = next((ln for ln in text.splitlines() if needle in ln), text[-300:])
    return re.sub(r"/tmp/pytest-of-[^/]+/pytest-[^/]+/", "<tmp>/", " ".join(line.split()))[:400]


# ---- index save ------------------------------------------------------------------------------

_SAVER = """
import sys, numpy as np
from pathlib import Path
from hear_features.index import IndexConfig, load, save
folder, step = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng()
index, generation, _ = load(folder, IndexConfig(factory="Flat"))
while True:
    ids = np.arange(len(index), len(index) + step)
    index.upsert(ids, rng.standard_normal((step, 512), dtype=np.float32))
    save(index, folder, model_id="m", source_watermark=len(index))
"""


def test_sigkill_during_index_save(tmp_path: Path) -> None:
    """A process keeps growing and saving an index; after each kill the last complete
    generation (or, if the newest file is damaged, the one before) loads and verifies."""
    rng = random.Random(3)
    folder = tmp_path / "index"
    n0, step = 40_000, 2_000
    data = np.random.default_rng(0).standard_normal((n0, 512), dtype=np.float32)
    save(
        VectorIndex.build(np.arange(n0), data, IndexConfig(factory="Flat")),
        folder,
        model_id="m",
        source_watermark=n0,
    )
    cmd = [sys.executable, "-c", _SAVER, str(folder), str(step)]
    kills = []
    counts = [n0]
    for i in range(max(REPEATS, 4)):
        delay = rng.uniform(1.5, 5.0)
        kills.append(
            run_and_kill(cmd, tmp_path, [folder], delay, "write" if i % 2 else "time", rng)
        )
        index, generation, _ = load(folder, IndexConfig(factory="Flat"))
        assert len(index) == generation.count
        assert (generation.count - n0) % step == 0
        assert generation.count >= counts[-1]  # never goes back past a completed save
        counts.append(generation.count)
        # At most one generation file the manifest does not name (killed before the
        # manifest was written), removed by the next save; no stray temp files pile up.
        assert len(list(folder.glob("index-*.faiss"))) <= 3
        assert len(list(folder.glob(".*.tmp"))) <= 1
    observe(
        "index save (FAISS file + manifest)",
        kills,
        f"the saved index loaded and verified after every kill ({counts[1:]} vectors)",
        True,
    )
    assert any(k.killed for k in kills)


def test_a_write_removes_temp_files_of_killed_writers_only(tmp_path: Path) -> None:
    from hear_features.atomic import atomic_write_bytes

    target = tmp_path / "table.parquet"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stray = tmp_path / f".table.parquet.{dead.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".table.parquet.{os.getpid()}.def456.tmp"
    stray.write_bytes(b"half a table")
    live.write_bytes(b"being written")
    atomic_write_bytes(target, b"new table")
    assert target.read_bytes() == b"new table"
    assert not stray.exists() and live.exists()


# ---- hear-features forget -------------------------------------------------------------------


def run_and_kill_at_work(
    cmd: list[str], watch: Path, work_s: float, rng: random.Random
) -> tuple[Kill, float, float]:
    """Start ``cmd`` and SIGKILL its process group a random 0 to ``work_s`` seconds after
    it first changes a file under ``watch`` (most of a forget's run is spent importing,
    and a kill there would test nothing). Returns the kill, the seconds to that first
    change, and the seconds from it to the last change seen."""

    def signature() -> set[tuple[str, int, int]]:
        found = set()
        for path in watch.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if path.is_file() and not path.name.endswith(("-shm", ".lock")):
                    found.add((str(path), st.st_size, st.st_mtime_ns))
        return found

    before = signature()
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while proc.poll() is None and signature() == before:
        time.sleep(0.002)
    changed = last = time.monotonic()
    deadline = changed + rng.uniform(0, work_s)
    seen = signature()
    while proc.poll() is None and time.monotonic() < deadline:
        now = signature()
        if now != seen:
            seen, last = now, time.monotonic()
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not killed and signature() != seen:
        last = time.monotonic()
    return Kill(killed, time.monotonic() - start, "write"), changed - start, last - changed


def forget_cmd(repo: Path, *recordings: str) -> list[str]:
    return forget_command(repo, *[arg for rec in recordings for arg in ("--recording", rec)])


def forget_state_after_kill(repo: Path, clips: set[str], vectors: np.ndarray) -> str:
    """What must hold after a kill: the stores load, and either the forget did nothing
    yet, or no read path of a restarted server returns its clips (a fresh index from the
    saved files and the table; training sets, while the tables still hold them)."""
    import pandas as pd
    from hear_features.index.sync import IndexSync

    from hear_features.errors import UnknownClipError
    from hear_features.featurestore.forget import pending
    from hear_features.featurestore.online.sqlite import ViewTable
    from hear_features.featurestore.repo import open_store
    from hear_features.featurestore.search import clip_key
    from hear_features.featurestore.training import training_set

    registered = {c for c, _ in registration_keys(repo)}
    stored = embedding_keys(repo)
    assert len(stored) == len(set(stored)) and {c for c, _ in stored} <= registered
    saved_index_count(repo)  # loads and verifies
    keys = {clip_key(c, 3) for c in clips}
    table = ViewTable(repo / "data" / "online.db", TABLE)
    online = {row.key for row in table.read("entity_key", sorted(keys), None, [])}
    store = open_store(repo)
    if online:  # killed before the deletion committed: nothing has changed
        interrupted = pending(store.config)  # (an earlier forget may be)
        assert online == keys and clips <= registered
        assert not any(c in interrupted for c in clips)
        return "nothing done yet"
    restarted = IndexSync(table, repo / "data" / "index" / TABLE, IndexConfig(), "restarted")
    result = restarted.search(vectors, 10, None)
    hits = sorted({int(i) for i in result.ids.ravel() if i >= 0}) if result else []
    assert not {row.key for row in table.read("id", hits, None, [])} & keys
    left = clips & registered
    if left:  # the tables are not rewritten yet: their readers leave the clips out
        entities = pd.DataFrame(
            {"clip_id": sorted(left), "event_timestamp": pd.Timestamp.now("UTC")}
        )
        with pytest.raises(UnknownClipError):
            training_set(store, entities)
        return "deleted online, tables pending"
    return "deleted everywhere"


def test_sigkill_during_forget(registered: Callable[[str], Path]) -> None:
    """Kills at random moments of the work of ``hear-features forget`` (each targets
    another recording; the next forget completes an interrupted one), then one run with
    every selector again: exact counts, and no byte of any forgotten clip in data/."""

    rng = random.Random(4)
    repo = registered("forget")
    feast(repo, "materialize-incremental", end_time())
    by_recording: dict[str, list[dict]] = {}
    for row in pq.read_table(repo / "data" / "embeddings.parquet").to_pylist():
        by_recording.setdefault(row["recording_id"], []).append(row)
    first, *others = sorted(by_recording)
    targets = others[: max(2, REPEATS // 2)]
    gone = [first, *targets]
    traces = Traces.of(
        repo / "data" / "embeddings.parquet",
        {row["clip_id"] for rec in gone for row in by_recording[rec]},
        set(gone),
    )
    rows_before = len(registration_keys(repo))
    # A run that is not killed measures how long the work after the imports lasts.
    reference, setup_s, work_s = run_and_kill_at_work(
        forget_cmd(repo, first), repo / "data", 600, rng
    )
    assert not reference.killed
    kills, outcomes = [], []
    for i, rec in enumerate(targets):
        vectors = np.asarray([row["embedding"] for row in by_recording[rec]], np.float32)
        cmd = forget_cmd(repo, rec)
        if i % 2 == 1:  # every other one before any change: while it plans
            delay = rng.uniform(0.5, 0.98) * setup_s
            kill = run_and_kill(cmd, repo, [repo / "data"], delay, "time", rng)
        else:  # while it deletes and rewrites, and a little past its last change
            kill, _, _ = run_and_kill_at_work(cmd, repo / "data", 1.2 * work_s, rng)
        kills.append(kill)
        clips = {row["clip_id"] for row in by_recording[rec]}
        outcomes.append(forget_state_after_kill(repo, clips, vectors))
    # The same forgets again: the interrupted ones complete, the others run.
    proc = subprocess.run(
        forget_cmd(repo, *targets), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 or "nothing to forget" in proc.stderr, proc.stdout + proc.stderr
    expected_rows = rows_before - sum(len(by_recording[rec]) for rec in gone)
    keys = registration_keys(repo)
    clips_left = len({c for c, _ in keys})
    rows, vectors_online = online_state(repo)
    indexed = saved_index_count(repo)
    leftovers = traces.scan(repo / "data")
    ok = (
        len(keys) == expected_rows
        and set(embedding_keys(repo)) == set(keys)
        and rows == vectors_online == clips_left == indexed
        and not leftovers
    )
    observe(
        "hear-features forget",
        kills,
        f"after each kill: {'; '.join(outcomes)}; the re-run left {len(keys)} registration "
        f"rows (expected {expected_rows}), {rows} online rows and {indexed} indexed vectors "
        f"for {clips_left} clips; {len(leftovers)} traces of the {len(gone)} forgotten "
        "recordings in data/",
        ok,
    )
    assert ok, (len(keys), expected_rows, rows, indexed, clips_left, leftovers[:5])
