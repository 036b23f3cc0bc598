"""Ranking stored recordings for an audio query (hear_features.query)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hear_features.query import best_per_recording, recordings_settled


@dataclass(frozen=True)
class Hit:
    clip_id: str
    distance: float
    features: dict[str, Any] = field(default_factory=dict)


def store(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """40 recordings of 5 clips each; each recording's clips lie close together."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, 16))
    clips = np.concatenate([c + 0.05 * rng.normal(size=(5, 16)) for c in centres])
    clips /= np.linalg.norm(clips, axis=1, keepdims=True)
    return clips, [f"rec{i // 5}" for i in range(len(clips))]


def nearest(clips: np.ndarray, recs: list[str], windows: np.ndarray, depth: int) -> list[list[Hit]]:
    out = []
    for w in windows:
        d = 1 - clips @ (w / np.linalg.norm(w))
        order = np.argsort(d)[:depth]
        out.append([Hit(f"c{i}", float(d[i]), {"recording_id": recs[i]}) for i in order])
    return out


def test_searching_deeper_until_settled_finds_the_k_nearest_recordings() -> None:
    clips, recs = store()
    rng = np.random.default_rng(1)
    windows = clips[[3, 77]] + 0.05 * rng.normal(size=(2, 16))  # near two recordings
    offsets = [0.0, 1.8]
    k = 6
    exact = best_per_recording(offsets, nearest(clips, recs, windows, len(clips)), k)
    # k clips per window name fewer than k recordings (five clips each): not settled
    shallow = nearest(clips, recs, windows, k)
    first = best_per_recording(offsets, shallow, k)
    assert len({r.recording_id for r in first}) < k or first != exact
    assert not recordings_settled(shallow, k, first, k)
    depth = k
    hits, ranked = shallow, first
    while not recordings_settled(hits, depth, ranked, k):
        depth *= 4
        hits = nearest(clips, recs, windows, depth)
        ranked = best_per_recording(offsets, hits, k)
    assert [r.recording_id for r in ranked] == [r.recording_id for r in exact]
    assert [r.best.distance for r in ranked] == [r.best.distance for r in exact]


def test_a_store_with_fewer_recordings_than_k_settles_once_exhausted() -> None:
    clips, recs = store()
    clips, recs = clips[:10], recs[:10]  # two recordings
    windows = clips[:1]
    hits = nearest(clips, recs, windows, 4)
    ranked = best_per_recording([0.0], hits, 5)
    assert not recordings_settled(hits, 4, ranked, 5)  # the list was full: maybe more
    hits = nearest(clips, recs, windows, 16)
    ranked = best_per_recording([0.0], hits, 5)
    assert len(ranked) == 2 and recordings_settled(hits, 16, ranked, 5)
