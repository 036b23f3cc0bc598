"""What a forget removes: the selection of clips, and the plan it resolves to.

:class:`Selector` says which clips (values of :data:`SELECTORS`); :func:`make_plan` finds
them in the offline tables and the online store and counts what would go from each
store (``hear-features forget --dry-run`` prints it). The plan is also the record an
interrupted forget is completed from (:mod:`hear_features.featurestore.forget`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView
from feast.repo_config import RepoConfig

from hear_features.errors import ConfigError
from hear_features.featurestore.audit import hashed_selector
from hear_features.featurestore.config import engine_config, repo_relative
from hear_features.featurestore.online import erasure
from hear_features.featurestore.online.rows import vector_field
from hear_features.featurestore.online.store import HearOnlineStoreConfig
from hear_features.featurestore.repo import Tables, tables
from hear_features.featurestore.search import clip_id_of, clip_key
from hear_features.featurestore.tombstones import WHOLE, tombstone
from hear_features.locking import file_lock
from hear_features.schema import ENTITY, JOIN_KEY

#: The columns a clip can be selected by (the CLI's --clip, --recording, --subject, --dataset).
SELECTORS: Final = ("clip_id", "recording_id", "subject_id", "dataset")
_SELECTOR_FILES = (".csv", ".parquet")
_CLIP_SALT = b"hear-features forget journal v1\0"


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which clips to forget: values per column (:data:`SELECTORS`); a clip is selected
    when any row of its history holds one of them."""

    values: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, **columns: Iterable[str] | None) -> Selector:
        """From column=values keywords (empty ones are left out)."""
        unknown = sorted(set(columns) - set(SELECTORS))
        if unknown:
            raise ConfigError(
                f"cannot select clips by {', '.join(unknown)}; use {', '.join(SELECTORS)}"
            )
        values = {}
        for name, given in columns.items():
            kept = tuple(dict.fromkeys(str(v).strip() for v in given or () if str(v).strip()))
            if kept:
                values[name] = kept
        return cls(values)

    @classmethod
    def from_file(cls, path: Path) -> Selector:
        """From a CSV or Parquet file whose columns are among :data:`SELECTORS`; every
        non-empty cell selects."""
        if path.suffix.lower() not in _SELECTOR_FILES:
            raise ConfigError(f"{path}: give a .csv or .parquet file of {', '.join(SELECTORS)}")
        try:
            frame = (
                pd.read_parquet(path)
                if path.suffix.lower() == ".parquet"
                else pd.read_csv(path, dtype=str, keep_default_na=False)
            )
        except Exception as exc:  # pandas raises many parser errors
            raise ConfigError(f"{path} cannot be read: {exc}") from exc
        unknown = sorted(set(map(str, frame.columns)) - set(SELECTORS))
        if unknown or frame.columns.empty:
            raise ConfigError(
                f"{path} has column(s) {', '.join(unknown) or '(none)'}; "
                f"a selection file holds only {', '.join(SELECTORS)}"
            )
        return cls.of(
            **{str(c): [v for v in frame[c].tolist() if isinstance(v, str)] for c in frame.columns}
        )

    def merged(self, other: Selector) -> Selector:
        both = {k: [*self.values.get(k, ()), *other.values.get(k, ())] for k in SELECTORS}
        return Selector.of(**both)

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.values.items()}

    def __bool__(self) -> bool:
        return bool(self.values)

    def describe(self) -> str:
        return "; ".join(
            f"{k} {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" for k, v in self.values.items()
        )


@dataclasses.dataclass
class ForgetPlan:
    """What one forget removes: its dry run, its audit entry, and its journal record."""

    forget_id: str
    time: str
    who: str
    selector: dict[str, list[str]]
    clip_ids: list[str]
    tombstones: list[str]
    counts: dict[str, Any]
    unmatched: dict[str, list[str]]

    def record(self) -> ForgetRecord:
        return ForgetRecord(
            self.forget_id,
            self.time,
            self.who,
            self.counts,
            self.tombstones,
            sorted(clip_hash(c) for c in self.clip_ids),
        )

    def audit_entry(self) -> dict[str, Any]:
        """What the audit log keeps: the selector with its values hashed, and counts; no
        clip id, path, vector or other metadata (:mod:`~hear_features.featurestore.audit`)."""
        return {**self.record().audit_entry(), **hashed_selector(self.selector)}


@dataclasses.dataclass(frozen=True)
class ForgetRecord:
    """The journal entry of a forget under way: enough to finish it, nothing that names
    a clip or a person (clip ids only as :func:`clip_hash` values), so the database
    rewrite can run while it exists."""

    forget_id: str
    time: str
    who: str
    counts: dict[str, Any]
    tombstones: list[str]
    clip_hashes: list[str]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ForgetRecord:
        return cls(**json.loads(text))

    def audit_entry(self) -> dict[str, Any]:
        """The audit entry, for a forget interrupted before it logged its selector."""
        return {
            "event": "forget",
            "id": self.forget_id,
            "time": self.time,
            "who": self.who,
            "selector": None,
            "counts": self.counts,
        }


def clip_hash(clip_id: str) -> str:
    """A clip id as a forget's journal keeps it: a salted SHA-256."""
    return hashlib.sha256(_CLIP_SALT + clip_id.encode()).hexdigest()


def hashed_in(clip_ids: pa.Array | pa.ChunkedArray, hashes: set[str]) -> pa.Array:
    """For each id, whether its :func:`clip_hash` is in ``hashes`` (each distinct id
    hashed once)."""
    unique = pc.unique(clip_ids)
    hit = pa.array([v for v in unique.to_pylist() if clip_hash(v) in hashes], pa.string())
    return pc.is_in(clip_ids, value_set=hit)


# ---- the repository as a forget sees it ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scope:
    store: FeatureStore
    config: RepoConfig
    tables: Tables
    views: list[Any]  # every view keyed by clip (feature views and on-demand views)
    vector_views: list[FeatureView]
    lock_timeout_s: float

    @classmethod
    def of(cls, store: FeatureStore) -> Scope:
        config = store.config
        if not isinstance(config.online_store, HearOnlineStoreConfig):
            raise ConfigError(
                "forget deletes online rows through this project's online store "
                "(hear_features.featurestore.online_store.HearOnlineStore); this repository "
                f"uses {type(config.online_store).__name__}"
            )
        views: list[Any] = [
            v
            for v in [*store.list_feature_views(), *store.list_on_demand_feature_views()]
            if ENTITY in (getattr(v, "entities", None) or [])
        ]
        return cls(
            store=store,
            config=config,
            tables=tables(store),
            views=views,
            vector_views=[v for v in views if vector_field(v) is not None],
            lock_timeout_s=engine_config(config).lock_timeout_s,
        )

    @property
    def path(self) -> Path:
        return Path(self.store.repo_path)

    def keys(self, clip_ids: Iterable[str]) -> list[bytes]:
        version = self.config.entity_key_serialization_version
        return [clip_key(c, version) for c in clip_ids]

    @contextlib.contextmanager
    def locked(self, timeout_s: float | None) -> Iterator[None]:
        """The locks of ``register`` and ``feast materialize``, in that order."""
        wait = self.lock_timeout_s if timeout_s is None else timeout_s
        reg, emb = self.tables.registrations, self.tables.embeddings
        with (
            file_lock(reg, timeout_s=wait, what=f"registration table {reg}"),
            file_lock(emb, timeout_s=wait, what=f"embeddings table {emb}"),
        ):
            yield

    def data_folders(self) -> list[Path]:
        folders = {
            self.tables.registrations.parent,
            self.tables.embeddings.parent,
            repo_relative(self.config, self.config.online_store.path).parent,
            repo_relative(self.config, self.config.online_store.index_path),
        }
        return sorted(folders)


# ---- planning ------------------------------------------------------------------------------


def make_plan(repo: Scope, selector: Selector, who: str) -> ForgetPlan:
    """Resolve ``selector`` against the offline tables and the online vector views."""
    wanted = list(selector.values)
    regs = _read(repo.tables.registrations, [JOIN_KEY, "content_hash", "offset_s", *wanted])
    embs = _read(repo.tables.embeddings, [JOIN_KEY, *wanted])
    matched: set[str] = set()
    seen: dict[str, set[str]] = defaultdict(set)
    for table in (regs, embs):
        for column, values in selector.values.items():
            if column not in table.column_names:
                continue
            hits = table.filter(pc.is_in(table[column], value_set=pa.array(values, pa.string())))
            matched.update(hits[JOIN_KEY].to_pylist())
            seen[column].update(hits[column].to_pylist())
    version = repo.config.entity_key_serialization_version
    for view in repo.vector_views:  # rows only the online store holds
        for column, values in selector.values.items():
            if column == JOIN_KEY:
                continue
            for key, value in erasure.keys_with(repo.config, view, column, values):
                matched.add(clip_id_of(key, version))
                seen[column].add(value)
    for clip in selector.values.get(JOIN_KEY, ()):
        if clip not in matched and any(
            erasure.count(repo.config, view, repo.keys([clip]))[0] for view in repo.views
        ):
            matched.add(clip)
    seen[JOIN_KEY].update(c for c in selector.values.get(JOIN_KEY, ()) if c in matched)

    clip_ids = sorted(matched)
    chosen = pa.array(clip_ids, pa.string())
    reg_rows = regs.filter(pc.is_in(regs[JOIN_KEY], value_set=chosen))
    keys = repo.keys(clip_ids)
    online = {view.name: erasure.count(repo.config, view, keys) for view in repo.views}
    counts: dict[str, Any] = {
        "clips": len(clip_ids),
        "recordings": len(set(reg_rows["content_hash"].to_pylist())),
        "registration_rows": reg_rows.num_rows,
        "embedding_rows": embs.filter(pc.is_in(embs[JOIN_KEY], value_set=chosen)).num_rows,
        "online_rows": {name: rows for name, (rows, _) in online.items()},
        "index_vectors": {v.name: online[v.name][1] for v in repo.vector_views},
    }
    now = dt.datetime.now(dt.UTC)
    return ForgetPlan(
        forget_id=f"F-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
        time=now.isoformat(),
        who=who,
        selector=selector.as_dict(),
        clip_ids=clip_ids,
        tombstones=_tombstones(regs, set(clip_ids)),
        counts=counts,
        unmatched={
            k: [v for v in values if v not in seen[k]]
            for k, values in selector.values.items()
            if any(v not in seen[k] for v in values)
        },
    )


def _read(path: Path, columns: list[str]) -> pa.Table:
    """The ``columns`` of the Parquet file that it has (all strings but offset_s)."""
    if not path.exists():
        return pa.table(
            {
                c: pa.array([], pa.float64() if c == "offset_s" else pa.string())
                for c in dict.fromkeys(columns)
            }
        )
    names = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in dict.fromkeys(columns) if c in names])


def _tombstones(regs: pa.Table, chosen: set[str]) -> list[str]:
    """One tombstone per recording whose every registered clip goes; per clip otherwise."""
    clips_of: dict[str, dict[str, int]] = defaultdict(dict)
    for clip, digest, offset in zip(
        regs[JOIN_KEY].to_pylist(),
        regs["content_hash"].to_pylist(),
        regs["offset_s"].to_pylist(),
        strict=True,
    ):
        clips_of[digest][clip] = round(offset * 1000)
    stones: set[str] = set()
    for digest, clips in clips_of.items():
        going = [c for c in clips if c in chosen]
        if not going:
            continue
        if len(going) == len(clips):
            stones.add(tombstone(digest, WHOLE))
        else:
            stones.update(tombstone(digest, clips[c]) for c in going)
    return sorted(stones)
