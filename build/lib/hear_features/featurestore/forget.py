"""``hear-features forget``: erase clips from every store of a repository, for good.

A forget selects clips (by clip, recording, subject or dataset id, or a file of those)
and removes every trace the repository keeps of them, in this order:

1. the online store, in one transaction: the rows of every view keyed by clip, plus a
   journal entry saying what else must go (:mod:`~hear_features.featurestore.online.journal`).
   From the commit on, no online read or search of any process returns the clips. The
   audit log (:mod:`~hear_features.featurestore.audit`) records it at once;
2. side by side, the three rewrites: the FAISS index files of every vector view, saved
   as their folder's only generation (a compressed index's vectors file rewritten
   without the rows), with the explorer's map caches dropped; the registration and
   embeddings tables without any row of the clips' history, whatever columns they have
   (Parquet rewritten atomically); and the online database's write-ahead log emptied
   (its deletes zeroed the freed bytes; a database older than that is rewritten once
   with ``VACUUM``), so no free page keeps deleted bytes;
3. tombstones (:mod:`~hear_features.featurestore.tombstones`), so ``register`` refuses
   the same audio; stray temporary files of killed writers; the journal entry.

It holds the locks of the registration and embeddings tables throughout, the locks
``register`` and ``feast materialize`` take. Every step is idempotent, so a forget
killed at any point is completed by the next forget, register or materialise
(:func:`resume`); until then :func:`pending` knows its clips, and the readers of the
offline tables (training sets, probes) leave them out.

It is erasure, not a new version: reads at any timestamp no longer see the clips. A clip
is selected when any row of its history matches (a clip whose subject was corrected goes
with either subject id). Copies outside the repository (exported training sets,
backups) are the user's to handle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import getpass
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore
from feast.repo_config import RepoConfig

from hear_features.atomic import remove_dead_strays
from hear_features.errors import ConfigError, UnknownClipError
from hear_features.featurestore.audit import AuditLog
from hear_features.featurestore.forget_plan import (
    ForgetPlan,
    ForgetRecord,
    Scope,
    Selector,
    clip_hash,
    hashed_in,
    make_plan,
)
from hear_features.featurestore.online import erasure
from hear_features.featurestore.online.store import HearOnlineStoreConfig
from hear_features.featurestore.search import invalidate_searches
from hear_features.featurestore.tables import write_table
from hear_features.featurestore.tombstones import Tombstones
from hear_features.schema import JOIN_KEY

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ForgetReport:
    plan: ForgetPlan
    dry_run: bool
    resumed: list[str]  # forget ids of interrupted runs this call completed
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # per step


class _Steps:
    """Wall seconds per step, for the report and the benchmark (steps may overlap)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def timed(self, name: str, fn: Callable[..., object], *args: object) -> Callable[[], None]:
        def run() -> None:
            with self(name):
                fn(*args)

        return run


# ---- entry points -------------------------------------------------------------------------


def forget(
    store: FeatureStore,
    selector: Selector,
    *,
    who: str | None = None,
    dry_run: bool = False,
    lock_timeout_s: float | None = None,
) -> ForgetReport:
    """Remove the selected clips from every store of ``store``'s repository (see the
    module docstring); ``dry_run`` only says what would go.

    ``who`` is recorded in the audit log (default: the OS user). Completes any
    interrupted forget first. Raises :class:`UnknownClipError` when nothing matches
    and nothing was pending, :class:`LockTimeout` when a writer holds a table longer
    than ``lock_timeout_s`` (default: the engine's ``lock_timeout_s``).
    """
    if not selector:
        raise ConfigError("select the clips to forget (clip, recording, subject or dataset ids)")
    repo = Scope.of(store)
    who = who or _os_user()
    step = _Steps()
    if dry_run:
        with step("plan"):
            plan = make_plan(repo, selector, who)
        return ForgetReport(plan, True, [], step.seconds)
    with contextlib.ExitStack() as held:
        with step("locks"):
            held.enter_context(repo.locked(lock_timeout_s))
        with step("resume"):
            resumed = _resume_locked(repo)
        with step("plan"):
            plan = make_plan(repo, selector, who)
        if not plan.clip_ids:
            if resumed:
                return ForgetReport(plan, False, resumed, step.seconds)
            raise UnknownClipError(
                f"nothing to forget: no stored clip matches {selector.describe()} "
                "(never registered, or forgotten already: see the audit log)"
            )
        record = plan.record()
        with step("online"):
            keys = repo.keys(plan.clip_ids)
            erasure.delete(repo.config, repo.views, keys, (plan.forget_id, record.to_json()))
            AuditLog(repo.path).append(plan.audit_entry())
        _finish(repo, record, plan.clip_ids, step)
    invalidate_searches()  # no search service of this process keeps a forgotten id
    return ForgetReport(plan, False, resumed, step.seconds)


def resume(store: FeatureStore, *, lock_timeout_s: float | None = None) -> list[str]:
    """Complete every interrupted forget of the repository; returns their ids."""
    if not unfinished(store.config):
        return []
    repo = Scope.of(store)
    with repo.locked(lock_timeout_s):
        return _resume_locked(repo)


def log_readmitted(
    store: FeatureStore, readmitted: Mapping[str, int], who: str | None = None
) -> None:
    """Record in the audit log that ``register --allow-forgotten`` re-admitted audio
    (forget id -> recordings)."""
    audit = AuditLog(Path(store.repo_path))
    now = dt.datetime.now(dt.UTC).isoformat()
    for forget_id, recordings in readmitted.items():
        audit.append(
            {
                "event": "readmit",
                "id": forget_id,
                "time": now,
                "who": who or _os_user(),
                "counts": {"recordings": recordings},
            }
        )


def unfinished(config: RepoConfig) -> bool:
    """Whether an interrupted forget awaits completion (one cheap query)."""
    if not isinstance(config.online_store, HearOnlineStoreConfig):
        return False
    return bool(erasure.journal(config).pending())


class Pending:
    """The clips of interrupted forgets: gone from the online store, maybe not yet from
    the offline tables, whose readers must leave them out."""

    def __init__(self, records: list[ForgetRecord]) -> None:
        self.hashes = {h for r in records for h in r.clip_hashes}

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def __contains__(self, clip_id: object) -> bool:
        return isinstance(clip_id, str) and clip_hash(clip_id) in self.hashes

    def mask(self, clip_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """For each id: whether it belongs to an interrupted forget."""
        return hashed_in(clip_ids, self.hashes)


def pending(config: RepoConfig) -> Pending:
    """The clips of every interrupted forget (none when the online store is not ours)."""
    if not isinstance(config.online_store, HearOnlineStoreConfig):
        return Pending([])
    return Pending([ForgetRecord.from_json(r) for _, r in erasure.journal(config).pending()])


# ---- doing ---------------------------------------------------------------------------------


def _finish(
    repo: Scope, record: ForgetRecord, clip_ids: list[str] | None, step: _Steps | None = None
) -> None:
    """Everything after the online deletion, each step idempotent. The three rewrites
    (index files, Parquet tables, database) touch different files and run side by side.
    ``clip_ids``: the plain ids (None when completing an interrupted forget, whose
    journal keeps only their hashes)."""
    step = step or _Steps()
    hashes = set(record.clip_hashes)

    def going(ids: pa.ChunkedArray) -> pa.Array:
        if clip_ids is not None:
            return pc.is_in(ids, value_set=pa.array(clip_ids, pa.string()))
        return hashed_in(ids, hashes)

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="forget") as pool:
        jobs = [
            pool.submit(step.timed("indexes", _compact_indexes, repo)),
            pool.submit(step.timed("tables", _drop_from_tables, repo, going)),
            pool.submit(step.timed("database", erasure.vacuum, repo.config)),
        ]
        for job in jobs:
            job.result()
    with step("records"):
        Tombstones(repo.tables.registrations).add(record.forget_id, record.tombstones)
        audit = AuditLog(repo.path)
        if not audit.has("forget", record.forget_id):  # killed before it was logged
            audit.append(record.audit_entry())
        for folder in repo.data_folders():
            remove_dead_strays(folder)
        erasure.journal(repo.config).finished(record.forget_id)
    log.info("forget %s complete", record.forget_id)


def _resume_locked(repo: Scope) -> list[str]:
    resumed = []
    for forget_id, text in erasure.journal(repo.config).pending():
        log.warning("completing the interrupted forget %s", forget_id)
        _finish(repo, ForgetRecord.from_json(text), None)
        resumed.append(forget_id)
    return resumed


def _compact_indexes(repo: Scope) -> None:
    for view in repo.vector_views:
        erasure.compact(repo.config, view)


def _drop_from_tables(repo: Scope, going: Callable[[pa.ChunkedArray], pa.Array]) -> None:
    for path in (repo.tables.embeddings, repo.tables.registrations):
        _drop_rows(path, going)


def _drop_rows(path: Path, going: Callable[[pa.ChunkedArray], pa.Array]) -> int:
    """Rewrite the Parquet table at ``path`` without the rows whose clip id is ``going``
    (all its columns kept); returns the rows removed. No rewrite when none is there."""
    if not path.exists():
        return 0
    if not pc.any(going(pq.read_table(path, columns=[JOIN_KEY])[JOIN_KEY])).as_py():
        return 0
    table = pq.read_table(path, use_threads=False)  # threads only compete on 2 cores
    kept = table.filter(pc.invert(going(table[JOIN_KEY])))
    write_table(path, kept)
    return table.num_rows - kept.num_rows


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}"
