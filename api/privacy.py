"""What a caller may see of stored clips: the one place where responses are filtered.

Every route that returns stored data builds its answer through a :class:`Disclosure`
(:data:`DisclosureDep`), so one rule covers search hits, clip look-ups, training-set rows
and map columns, including columns added later:

- **public** (:data:`PUBLIC_FIELDS`): ids, offsets, labels, dataset, device, model,
  timestamps, scores;
- **guarded** (:data:`GUARDED_FIELDS`): ``subject_id`` and ``embedding``, shown only to keys
  allowed to see them (:class:`~hear_features.api.auth.Sensitive`);
- **server-only** (:data:`SERVER_ONLY`): the absolute ``audio_uri`` and the content hash
  are never shown; a caller allowed to see ``path`` gets ``path``, the recording's location
  relative to the audio root it lies in (nothing when it lies in none);
- **everything else is study metadata** (``metadata``): a column the API does not know is
  hidden unless the key may see metadata, so a new column is private until listed here.

Hidden fields are left out of the answer (absent, not null). Asking for hidden data on
purpose (a filter on ``subject_id``, ``include_embedding``, a map column) is refused with
403 rather than answered with less than was asked for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, Request
from hear_features.api.auth import Caller, Sensitive
from hear_features.api.deps import current_caller, get_worker

from hear_features.audio.sources import AudioSources
from hear_features.errors import FilterError, Forbidden, HearFeaturesError
from hear_features.schema import CREATED, EMBEDDING, EVENT_TIMESTAMP, JOIN_KEY, MODEL_ID

#: Shown to every caller.
PUBLIC_FIELDS = frozenset(
    {
        JOIN_KEY,
        "recording_id",
        "offset_s",
        "label",
        "dataset",
        "device",
        MODEL_ID,
        EVENT_TIMESTAMP,
        CREATED,
        "duration_s",
        "sample_rate",
        # what a search or a training-set expansion adds to a clip
        "score",
        "distance",
        "seed_id",
        "rank",
    }
)
#: Shown only to callers allowed to see their kind.
GUARDED_FIELDS: dict[str, Sensitive] = {
    "subject_id": Sensitive.subject_id,
    EMBEDDING: Sensitive.embedding,
}
#: Never shown to anyone: server locations and internals.
SERVER_ONLY = frozenset({"audio_uri", "content_hash"})
#: The field that replaces ``audio_uri`` for callers allowed to see paths.
PATH = "path"


def kind_of(name: str) -> Sensitive | None:
    """What a caller must be allowed to see to get field ``name`` (None: public)."""
    if name in PUBLIC_FIELDS:
        return None
    if name == PATH:
        return Sensitive.path
    return GUARDED_FIELDS.get(name, Sensitive.metadata)


@functools.lru_cache(maxsize=4096)
def _may_show(sees: frozenset[Sensitive], own: frozenset[str], name: str) -> bool:
    """Whether a caller that may see ``sees`` and sent columns ``own`` gets field ``name``.

    Kept per (caller's kinds, own columns, field): every hit of every search asks this for
    each of its fields, and the answer only changes with the key."""
    if name in SERVER_ONLY:
        return False
    if name in own:
        return True
    kind = kind_of(name)
    return kind is None or kind in sees


@functools.lru_cache(maxsize=256)
def _shown(
    sees: frozenset[Sensitive], own: frozenset[str], names: tuple[str, ...]
) -> tuple[str, ...]:
    """Which of ``names`` such a caller gets, in order: every hit of a search has the same
    feature names, so :meth:`Disclosure.fields` decides once per key and set of names."""
    return tuple(name for name in names if _may_show(sees, own, name))


@dataclass(frozen=True)
class Disclosure:
    """The fields of stored clips that one caller may see.

    ``roots``: the audio roots that relative paths are given against; ``own``: columns
    the caller itself sent (a training set's extra entity columns), always echoed."""

    caller: Caller
    roots: tuple[Path, ...] = ()
    own: frozenset[str] = frozenset()

    def with_own(self, names: Iterable[str], columns: Collection[str]) -> Disclosure:
        """The same, echoing the caller's own columns ``names`` as they appear among
        ``columns`` (the answer's): a training set renames a column named like a stored
        feature to ``given_<name>``, and then ``<name>`` is the stored feature, shown
        only as the rules allow (an entity column named ``subject_id`` or ``embedding``
        must not unlock the stored one)."""
        echoed = frozenset(
            f"given_{name}" if f"given_{name}" in columns else name for name in names
        )
        return Disclosure(self.caller, self.roots, echoed)

    def may_show(self, name: str) -> bool:
        return _may_show(self.caller.sees, self.own, name)

    def fields(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """``features`` less what this caller may not see; ``audio_uri`` becomes ``path``
        for callers allowed to see paths."""
        sees = self.caller.sees
        out = {name: features[name] for name in _shown(sees, self.own, tuple(features))}
        if "audio_uri" in features and Sensitive.path in sees:
            out[PATH] = self.relative_path(features["audio_uri"])
        return out

    def hidden(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` this caller does not get (in order), as the caller would
        know them: ``audio_uri`` is listed as ``path`` when paths are hidden too."""
        out = []
        for name in names:
            if name == "audio_uri":
                if not self.caller.may_see(Sensitive.path):
                    out.append(PATH)
            elif not self.may_show(name):
                out.append(name)
        return out

    def frame(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """A table of stored clips (a training set) as this caller may see it, and the
        columns left out (:meth:`hidden`)."""
        dropped = [name for name in frame.columns if not self.may_show(name)]
        out = frame.drop(columns=dropped)
        if "audio_uri" in frame.columns and self.caller.may_see(Sensitive.path):
            out[PATH] = [self.relative_path(uri) for uri in frame["audio_uri"]]
        return out, self.hidden(frame.columns)

    def relative_path(self, uri: object) -> str | None:
        """``uri`` relative to the audio root it lies in (lexically), else None."""
        if not isinstance(uri, str):
            return None
        try:
            path = Path(os.path.normpath(AudioSources.parse(uri)))
        except HearFeaturesError:
            return None
        for root in self.roots:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return None

    def require(self, names: Iterable[str], why: str) -> None:
        """403 for the first of ``names`` this caller may not see (asked for on purpose)."""
        for name in names:
            if name in SERVER_ONLY:
                raise Forbidden(f"{why} on {name}: server locations are never shown")
            kind = kind_of(name)
            if kind is not None and name not in self.own:
                self.caller.require(kind, f"{why} on {name}")

    def require_filters(self, names: Iterable[str], known: Iterable[str]) -> None:
        """Filters on ``names`` over a store whose filterable fields are ``known``:
        :class:`FilterError` (422) for a field the store does not have, listing only the
        fields this caller may filter on (no hidden column is named to it); then
        :meth:`require` (403 for a field it may not see)."""
        names, fields = list(names), list(known)
        unknown = [name for name in names if name not in fields]
        if unknown:
            visible = ", ".join(name for name in fields if self.may_show(name))
            raise FilterError(f"unknown filter field {unknown[0]!r} (filterable fields: {visible})")
        self.require(names, "filtering")


async def get_disclosure(request: Request) -> Disclosure:
    """What this request's caller may see (its caller: :data:`~hear_features.api.deps.CallerDep`).

    The caller and the worker are looked up here rather than named as dependencies:
    FastAPI solves each named dependency's own tree again per mention, about 45 us a node
    on the search path, and routes that show stored data name the worker themselves."""
    return Disclosure(await current_caller(request), (await get_worker(request)).audio_roots)


#: What the calling key may see of stored clips.
DisclosureDep = Annotated[Disclosure, Depends(get_disclosure)]
