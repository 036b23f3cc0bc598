"""The acoustic baseline's features: statistics of the project's own log-mel front-end.

Each clip's registered 2 s window is read back from its audio file (the same windows
the encoder saw: same offsets, same zero padding) and passed through the stand-in
encoder's front-end (:func:`hear_features.encoders.standin.log_mel_statistics`: STFT
400/160, 128 mel bins over 0-8 kHz, log, per-clip mean removed, mean and standard
deviation of each bin over time: 256 numbers). A unit's features are the mean over its
clips. If any recording cannot be read as registered (missing, moved outside the audio
roots, changed since registration), the baseline is skipped with the reason: a
baseline on a different set of units than the probe would not be comparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hear_features.audio import windows_at
from hear_features.audio.sources import AudioSources
from hear_features.clips import content_hash
from hear_features.errors import AudioError
from hear_features.probe.selection import UNIT
from hear_features.schema import CLIP_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)

_BATCH = 64
_NEEDED = ("clip_id", UNIT, "audio_uri", "offset_s")


@dataclass(frozen=True)
class AcousticFeatures:
    """``features`` ``[n_units, 256]`` in the order of ``units``, or why there are none."""

    features: np.ndarray | None
    skipped: str | None = None
    recordings: int = 0


def log_mel_features(
    clips: pd.DataFrame, units: np.ndarray, sources: AudioSources | None = None
) -> AcousticFeatures:
    """Acoustic baseline features of each unit, read from the registered audio."""
    missing = [c for c in _NEEDED if c not in clips.columns]
    if missing:
        return AcousticFeatures(None, f"the selection has no {', '.join(missing)} column")
    sources = sources or AudioSources()
    per_clip: dict[str, np.ndarray] = {}
    problems: list[str] = []
    front_end = _FrontEnd()
    recordings = clips.groupby("audio_uri", sort=True)
    for uri, rows in recordings:
        try:
            samples = _registered_windows(str(uri), rows, sources)
        except AudioError as exc:
            problems.append(str(exc))
            continue
        for clip_id, stats in zip(
            samples, front_end(np.stack(list(samples.values()))), strict=True
        ):
            per_clip[clip_id] = stats
    if problems:
        return AcousticFeatures(
            None,
            f"{len(problems)} of {recordings.ngroups} recording(s) cannot be read as "
            f"registered (first: {problems[0]})",
        )
    unit_of = clips[UNIT].to_numpy()
    index = {u: i for i, u in enumerate(units.tolist())}
    sums = np.zeros((len(units), front_end.dim), dtype=np.float64)
    sizes = np.zeros(len(units), dtype=np.int64)
    for clip_id, unit in zip(clips["clip_id"], unit_of, strict=True):
        sums[index[unit]] += per_clip[clip_id]
        sizes[index[unit]] += 1
    return AcousticFeatures(sums / np.maximum(sizes, 1)[:, None], None, recordings.ngroups)


def _registered_windows(
    uri: str, rows: pd.DataFrame, sources: AudioSources
) -> dict[str, np.ndarray]:
    """The 2 s windows of one recording at its registered offsets, by clip id."""
    path = sources.local_path(uri)
    hashes = set(rows["content_hash"].dropna()) if "content_hash" in rows.columns else set()
    if hashes and content_hash(Path(path)) not in hashes:
        raise AudioError(path, "changed since it was registered (content hash differs)")
    by_start = {
        round(float(o) * SAMPLE_RATE): str(c)
        for c, o in zip(rows["clip_id"], rows["offset_s"], strict=True)
    }
    found = {by_start[w.start]: w.samples for w in windows_at(path, list(by_start))}
    if len(found) < len(by_start):
        raise AudioError(path, "is shorter than when it was registered")
    return {clip: found[clip] for clip in sorted(found)}


class _FrontEnd:
    """The stand-in's log-mel statistics as one compiled TensorFlow function."""

    def __init__(self) -> None:
        self._fn: Any = None
        self.dim = 0

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        if self._fn is None:
            self._fn = self._build()
        out = [
            self._fn(clips[i : i + _BATCH].astype(np.float32)).numpy()
            for i in range(0, len(clips), _BATCH)
        ]
        result = np.concatenate(out).astype(np.float64)
        self.dim = result.shape[1]
        return result

    @staticmethod
    def _build() -> Any:
        from hear_features.encoders.standin import log_mel_statistics, mel_weight_matrix
        from hear_features.encoders.tf_runtime import import_tensorflow

        tf = import_tensorflow()
        mel = tf.constant(mel_weight_matrix(tf))

        @tf.function(input_signature=[tf.TensorSpec([None, CLIP_SAMPLES], tf.float32)])
        def statistics(x: Any) -> Any:
            return log_mel_statistics(tf, x, mel)

        return statistics
