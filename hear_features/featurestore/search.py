"""Similar clips: the one search path of the SDK helper, the CLI, the API and training sets.

:class:`ClipSearch` asks the online store's FAISS index directly, with the repository's
configuration, and answers with clip ids and plain values. It does not go through
``FeatureStore.retrieve_online_documents_v2`` (which stays available to Feast users, and
answers from the same index): that call rebuilds the view's objects from the registry
about three times per query, which costs more than the search itself, and returns hits
in entity-key order for the caller to sort again.

One store holds the vectors of one model: :func:`check_same_model` is the rule every
query made from audio passes through.

Hits carry every scalar feature of the view (:attr:`ClipSearch.hit_features`): the
built-in metadata and the study's own columns. Filters are Feast's
``ComparisonFilter``/``CompoundFilter`` on those features, checked once, by the online
store's search (:meth:`ClipSearch.check_filters` checks them early for callers that want
to refuse a request before costly work); ``--where`` conditions of the CLI become such
filters through :func:`~hear_features.featurestore.online.fields.filters_from_where`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from feast import FeatureStore, FeatureView
from feast.errors import FeatureViewNotFoundException
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from hear_features.errors import ConfigError, InputShapeError, ModelMismatchError, UnknownClipError
from hear_features.featurestore.online.bound import BoundView
from hear_features.featurestore.online.fields import check_filters
from hear_features.featurestore.online.store import HearOnlineStore, HearOnlineStoreConfig
from hear_features.featurestore.registry_watch import RegistryWatch, Token
from hear_features.featurestore.repo import views
from hear_features.index.arrays import check_vectors
from hear_features.schema import JOIN_KEY

log = logging.getLogger(__name__)

Filter = ComparisonFilter | CompoundFilter


@dataclass(frozen=True)
class Match:
    """One stored clip near a query: smaller ``distance`` is closer (1 - cosine for the
    embeddings view), larger ``score`` is closer; ``features`` are plain Python values."""

    clip_id: str
    distance: float
    score: float
    features: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {JOIN_KEY: self.clip_id, "distance": self.distance, **self.features}


@dataclass(frozen=True)
class StoredClip:
    """A clip as the online store holds it."""

    clip_id: str
    event_timestamp: dt.datetime
    features: dict[str, Any]


#: OpenMP threads per search call of the search service. One: a single-query search on
#: two threads was 1.4x faster on an idle machine but several times slower once other
#: processes kept the cores busy (a thread waiting for a core holds the whole query),
#: and a server runs many one-thread searches side by side anyway (BENCHMARKS.md,
#: "Search under load").
SEARCH_THREADS = 1
#: How long a search service keeps answering from its last good registry state while the
#: registry file cannot be read (seconds; Feast rewrites it in place).
REGISTRY_REWRITE_S = 5.0
#: Entity keys whose (de)serialisation each search service remembers.
_KEY_CACHE = 1 << 16


@dataclass(frozen=True)
class _Bound:
    """What a search needs from the registry, and the registry state it came from."""

    token: Token
    view: FeatureView
    bound: BoundView
    names: frozenset[str]  # the view's feature names
    hit_features: tuple[str, ...]  # every feature of the view but the vector


class ClipSearch:
    """Nearest stored clips of a feature repository's vector view.

    What a search needs from the registry (the view, its vector field, the index and
    table it maps to, its feature names) is found once and kept until the registry
    changes: ``feast apply`` writes a new registry file, which costs one ``stat`` per
    call to notice (:class:`~hear_features.featurestore.registry_watch.RegistryWatch`).
    Entity keys are serialised and parsed once each. :meth:`invalidate` drops all of
    it, for changes the registry does not show (clips forgotten).

    ``threads``: OpenMP threads per search call (:data:`SEARCH_THREADS` by default;
    ``None`` lets :meth:`hear_features.index.VectorIndex.search` choose per call, which
    is fastest only on an idle machine).
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        view: str | None = None,
        threads: int | None = SEARCH_THREADS,
    ) -> None:
        if not isinstance(store.config.online_store, HearOnlineStoreConfig):
            raise ConfigError(
                "similar-clip search needs the repository's online store to be "
                "hear_features.featurestore.online_store.HearOnlineStore"
            )
        # The registry, not the store: the per-store cache of clip_search() must not keep
        # its key alive.
        self._registry = store.registry
        self._project = store.project
        self._repo = store.repo_path
        self.config = store.config
        self.view_name = view or views(store).embeddings
        self.online = HearOnlineStore()
        self.threads = threads
        self._version = store.config.entity_key_serialization_version
        self._watch = RegistryWatch(store.config)
        self._lock = threading.Lock()
        self._state: _Bound | None = None
        self._failing_since = 0.0  # when rebinding started failing (monotonic s; 0: not)
        self._clip_id = functools.lru_cache(maxsize=_KEY_CACHE)(self._decode_key)
        self._key = functools.lru_cache(maxsize=_KEY_CACHE)(self._encode_key)
        self._key_head = self._encode_key("")[:-4]  # all but the (zero) value length
        self._current()  # an unknown view, or one without a vector field, fails here
        _LIVE.add(self)

    # ---- the cached registry state ------------------------------------------------------

    @property
    def view(self) -> FeatureView:
        """The vector view as the registry defines it now."""
        return self._current().view

    def invalidate(self) -> None:
        """Forget the cached view, index binding and entity keys; the next call reads
        the registry again and brings the index up to date with its table.

        The hook for changes the registry file does not show: call it after clips are
        forgotten (the key caches may hold their ids), or after changing a registry that
        is not a local file. :func:`invalidate_searches` calls it on every search
        service of the process.
        """
        with self._lock:
            self._state = None
            self._clip_id.cache_clear()
            self._key.cache_clear()

    def _current(self) -> _Bound:
        token = self._watch.token()
        state = self._state
        if state is not None and state.token == token:
            return state
        with self._lock:
            state = self._state
            if state is not None and state.token == token:
                return state
            try:
                self._state = self._bind(token)
            except Exception:
                # Feast rewrites the registry file in place (`feast apply`, and every
                # `feast materialize` records its interval there): read mid-write, it
                # is cut short. Keep answering from the last good state, and try again
                # on the next call, for as long as a rewrite can take.
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if state is None or now - self._failing_since > REGISTRY_REWRITE_S:
                    raise
                log.debug("registry of %s unreadable; kept the previous view", self._repo)
                return state
            self._failing_since = 0.0
            return self._state

    def _bind(self, token: Token) -> _Bound:
        self._registry.refresh(self._project)
        try:
            view = self._registry.get_feature_view(self.view_name, self._project, allow_cache=True)
        except FeatureViewNotFoundException as exc:
            raise ConfigError(
                f"feature view {self.view_name} is not in the registry of {self._repo}; "
                "run `feast apply` there, or give another repository with --repo"
            ) from exc
        names = frozenset(f.name for f in view.features)
        bound = self.online.bind(self.config, view)
        # A hit carries every feature of the view but the vector (study columns too).
        hit = tuple(f.name for f in view.features if f.name != bound.vector.name)
        return _Bound(token, view, bound, names, hit)

    # ---- searching ----------------------------------------------------------------------

    @property
    def hit_features(self) -> tuple[str, ...]:
        """What a hit carries by default: every feature of the view but the vector."""
        return self._current().hit_features

    @property
    def filter_fields(self) -> dict[str, str]:
        """The features a filter may name, with their kind (text, number or bool)."""
        return dict(self._current().bound.fields)

    def check_filters(self, filters: Filter | None) -> Filter | None:
        """``filters`` checked and converted to the features' types, as every search
        does (:class:`~hear_features.errors.FilterError` for an unknown field or a value
        that does not fit); for callers that refuse a request before costly work."""
        return check_filters(filters, self._current().bound.fields, self.view_name)

    def check_queries(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` ([n, d] or [d]) as float32 [n, d] if the index can compare them
        faithfully (:func:`~hear_features.index.arrays.check_vectors`, with the view's
        metric), else :class:`~hear_features.errors.InputShapeError`; for callers that
        batch queries, so one bad query cannot fail the others."""
        return check_vectors(np.asarray(vectors), self._current().bound.sync.config.metric)

    @property
    def model_id(self) -> str:
        """The model that made the stored vectors (``unknown`` before any write)."""
        return self._current().bound.sync.model_id

    def is_fresh(self) -> bool:
        """Whether a search can start at once: the registry as last read, the index with every
        committed change (else it catches up first, which can take long). A stat, a query."""
        state = self._state
        if state is None or state.token != self._watch.token():
            return False
        return not state.bound.sync.behind()

    def refresh(self) -> int:
        """Apply what other processes wrote since the last look; the number of vectors."""
        index = self._current().bound.sync.current()
        return len(index) if index is not None else 0

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        filters: Filter | None = None,
        features: Sequence[str] | None = None,
    ) -> list[list[Match]]:
        """The ``k`` stored clips nearest to each row of ``vectors`` ([n, d] or [d]),
        nearest first, with ``features`` (default :attr:`hit_features`: every feature
        but the vector; add ``embedding`` for the vectors). An unknown feature name is
        refused."""
        state = self._current()
        if features is None:
            wanted: Sequence[str] = state.hit_features
        else:
            unknown = [f for f in features if f not in state.names]
            if unknown:
                raise InputShapeError(
                    f"feature view {self.view_name} has no feature(s) {', '.join(unknown)}"
                )
            wanted = features
        hits = state.bound.search(
            np.atleast_2d(np.asarray(vectors)),  # checked in float64 (check_vectors)
            k,
            filters=filters,
            features=wanted,
            threads=self.threads,
            plain=True,
        )
        clip_id = self._clip_id
        return [
            [Match(clip_id(h.key), h.distance, h.score, h.features) for h in row] for row in hits
        ]

    def clips(self, clip_ids: Sequence[str]) -> list[StoredClip | None]:
        """The stored clips of ``clip_ids`` (None for an id the store does not hold)."""
        keys = [self._key(c) for c in clip_ids]
        found = self._current().bound.read(keys, plain=True)
        return [
            None if key not in found else StoredClip(c, found[key].event_ts, found[key].features)
            for c, key in zip(clip_ids, keys, strict=True)
        ]

    def vectors_of(self, clip_ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``clip_ids`` as float32 [n, d]; unknown ids are refused."""
        found = self.clips(clip_ids)
        unknown = [c for c, clip in zip(clip_ids, found, strict=True) if clip is None]
        if unknown:
            raise UnknownClipError(f"unknown clip id(s): {', '.join(unknown[:10])}")
        vector = self._current().bound.vector.name
        return np.asarray([clip.features[vector] for clip in found if clip], np.float32)

    def similar_to_clip(self, clip_id: str, k: int) -> list[Match]:
        """The ``k`` stored clips nearest to a stored clip, itself excluded."""
        (row,) = self.search(self.vectors_of([clip_id]), k + 1)
        return [m for m in row if m.clip_id != clip_id][:k]

    def clip_id_of(self, key: bytes) -> str:
        """The clip id in a serialized entity key."""
        return self._clip_id(key)

    def _decode_key(self, key: bytes) -> str:
        # Fast path: the key of one string join key is a fixed prefix, the value's
        # length and the value (Feast's v3 layout); parsing it costs 1/20 of Feast's.
        head = self._key_head
        if key.startswith(head) and len(key) >= len(head) + 4:
            size = int.from_bytes(key[len(head) : len(head) + 4], "little")
            if len(key) == len(head) + 4 + size:
                return key[len(head) + 4 :].decode()
        return clip_id_of(key, self._version)

    def _encode_key(self, clip_id: str) -> bytes:
        return clip_key(clip_id, self._version)


#: Every search service of this process, for :func:`invalidate_searches`.
_LIVE: weakref.WeakSet[ClipSearch] = weakref.WeakSet()


def invalidate_searches() -> None:
    """:meth:`ClipSearch.invalidate` on every search service of this process (the API's
    and the SDK helper's), and :func:`clip_id_of`'s cache emptied: called after clips
    are forgotten, so that no cache of this process keeps a forgotten clip's id.
    (Answers never depend on these caches: they hold no rows, features or vectors.)"""
    for search in list(_LIVE):
        search.invalidate()
    clip_id_of.cache_clear()


def check_same_model(stored: str, used: str, stored_vectors: int = 1) -> None:
    """Refuse to compare a query embedded by ``used`` with vectors made by ``stored``."""
    if stored_vectors and stored != "unknown" and stored != used:
        raise ModelMismatchError(
            f"the store holds vectors of {stored}, but the query was embedded with {used}; "
            "configure the same model"
        )


_SEARCHES: weakref.WeakKeyDictionary[FeatureStore, dict[str | None, ClipSearch]] = (
    weakref.WeakKeyDictionary()
)


def clip_search(store: FeatureStore, view: str | None = None) -> ClipSearch:
    """The :class:`ClipSearch` of one of ``store``'s vector views (default: its embeddings
    view), made once per store and view."""
    per_view = _SEARCHES.setdefault(store, {})
    search = per_view.get(view)
    if search is None:
        search = per_view[view] = ClipSearch(store, view=view)
    return search


def similar_clips(
    store: FeatureStore,
    vector: Sequence[float] | np.ndarray,
    k: int,
    *,
    filters: Filter | None = None,
    features: Sequence[str] | None = None,
    view: str | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` stored clips nearest to ``vector``, nearest first (the SDK helper).

    Each hit is a dict with ``clip_id``, ``distance`` (1 - cosine) and the features
    (default: every feature of the view but the vector, study columns included).
    ``filters``: Feast filters on those features (:class:`~hear_features.errors.FilterError`
    for an unknown field, listing the known ones). ``view``: another vector view than the
    repository's embeddings view. A zero, non-finite or overflowing ``vector`` is refused
    (:class:`~hear_features.errors.InputShapeError`).
    """
    search = clip_search(store, view)
    (row,) = search.search(np.asarray(vector), k, filters=filters, features=features)
    return [match.as_dict() for match in row]


def clip_key(clip_id: str, version: int) -> bytes:
    """The serialized entity key of ``clip_id`` (Feast's key format ``version``)."""
    proto = EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=clip_id)])
    return serialize_entity_key(proto, entity_key_serialization_version=version)


@functools.lru_cache(maxsize=1 << 18)
def clip_id_of(key: bytes, version: int) -> str:
    """The clip id in a serialized entity key (cached: hits repeat, parsing them does not)."""
    proto = deserialize_entity_key(key, entity_key_serialization_version=version)
    return str(proto.entity_values[0].string_val)
