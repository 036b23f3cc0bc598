"""Audio as a query: a recording -> the clips to embed, and window hits -> recordings.

``hear-features more-like --audio``, training-set expansion and ``POST
/v1/search/audio`` all turn a recording into query clips here, and the API ranks stored
recordings by their best-matching clip here. The encoder is passed in by the caller
(the API batches clips of several uploads into one encoder call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hear_features.audio import AudioLimits, AudioSource, WindowConfig, iter_windows, source_name
from hear_features.errors import AudioError


@dataclass(frozen=True)
class AudioQuery:
    """The windows of a recording to search with: offsets (s) and float32 [n, 32000]."""

    name: str
    offsets: list[float]
    clips: np.ndarray

    @property
    def ids(self) -> list[str]:
        """A name for each window: ``<recording>@<offset>s``."""
        return [f"{self.name}@{offset:.2f}s" for offset in self.offsets]


def audio_query(
    source: AudioSource,
    *,
    name: str | None = None,
    strongest: bool = False,
    config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
) -> AudioQuery:
    """Every window of ``source`` loud enough to search with (as ``config`` cuts them),
    or with ``strongest`` only the window centred on its loudest burst.

    Raises :class:`AudioError` when no window is loud enough.
    """
    name = name or source_name(source)
    config = config or WindowConfig(mode="event" if strongest else "fixed")
    windows = list(iter_windows(source, config, limits))
    if not windows:
        floor = config.min_rms_db if config.min_rms_db is not None else config.event_floor_db
        raise AudioError(name, f"has no window louder than {floor:g} dBFS to search with")
    if strongest:
        windows = [max(windows, key=lambda w: w.rms_db)]
    return AudioQuery(name, [w.offset_s for w in windows], np.stack([w.samples for w in windows]))


class _Hit(Protocol):
    clip_id: str
    distance: float
    features: dict[str, Any]


@dataclass(frozen=True)
class RecordingHit:
    """A stored recording, ranked by its clip nearest to any window of the query."""

    recording_id: str
    best: Any  # the hit of its best clip
    query_offset_s: float


def best_per_recording(
    offsets: Sequence[float], per_window: Sequence[Sequence[_Hit]], k: int
) -> list[RecordingHit]:
    """The ``k`` stored recordings nearest to the query, over all its windows."""
    best: dict[str, RecordingHit] = {}
    for offset, hits in zip(offsets, per_window, strict=True):
        for hit in hits:
            recording = hit.features.get("recording_id") or hit.clip_id
            if recording not in best or hit.distance < best[recording].best.distance:
                best[recording] = RecordingHit(recording, hit, offset)
    return sorted(best.values(), key=lambda r: r.best.distance)[:k]


def recordings_settled(
    per_window: Sequence[Sequence[_Hit]], depth: int, ranked: Sequence[RecordingHit], k: int
) -> bool:
    """Whether ``ranked`` (:func:`best_per_recording` of windows searched ``depth`` clips
    deep) are certainly the ``k`` nearest recordings.

    A recording has many clips, so ``k`` clips per window can name fewer than ``k``
    recordings, and a recording can be missing because other recordings' clips filled a
    window's list. Settled when ``k`` were found and every window's list reaches past the
    ``k``-th recording's distance (a clip left out is farther than all of them), or when
    every list is shorter than ``depth`` (the store holds no more)."""
    exhausted = all(len(hits) < depth for hits in per_window)
    if len(ranked) < k:
        return exhausted
    kth = ranked[-1].best.distance
    return all(len(hits) < depth or hits[-1].distance >= kth for hits in per_window)
