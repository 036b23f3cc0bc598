"""Cut 16 kHz mono audio into HeAR's 2 s input windows.

Two strategies, both streaming (blocks in, windows out, bounded memory):

* ``fixed``: windows every ``hop_s`` seconds (default 1.8 s, i.e. the 10 % overlap of
  the HeAR reference notebooks); the last window is zero-padded so that every sample is
  covered, and a recording shorter than 2 s gives one zero-padded window.
* ``event``: one window centred on each loud burst, found by :func:`pick_events` on a
  frame-level envelope. HeAR is not a cough detector and its authors advise cropping to
  the sound of interest; this picker is a deliberately simple energy detector for that.

Optionally, windows quieter than ``min_rms_db`` (RMS in dB relative to full scale) are
skipped, as the reference notebooks do at about -50 dB.

Levels are measured on what was recorded, not on what the window adds: only on the
window's real samples (never its zero padding, which would make a quiet 0.4 s word
measure 7 dB quieter than it is), and after removing the DC offset (a recorder's
constant offset is not sound, and would make near-silence look loud). The window handed
to the encoder is DC-free too: its real samples minus their mean, then the zero padding.
So the padding continues the signal's own baseline instead of stepping down from the
offset to zero, and a recording with a DC offset gives the same windows, and the same
samples, as the same recording without one. The event picker's frame levels are DC-free
in the same way (each 25 ms frame minus its mean).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hear_features.schema import CLIP_SAMPLES, SAMPLE_RATE

#: Envelope frames used by the event picker: 25 ms long, every 10 ms.
FRAME_LENGTH = 400
FRAME_HOP = 160

_DB_FLOOR = -120.0


@dataclass(frozen=True)
class WindowConfig:
    """How a recording becomes clips. Every field is documented in the README."""

    mode: Literal["fixed", "event"] = "fixed"
    hop_s: float = 1.8
    min_rms_db: float | None = -50.0
    event_floor_db: float = -50.0
    event_margin_db: float = 15.0
    event_min_gap_s: float = 0.3
    event_min_length_s: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "event"):
            raise ValueError(f"window mode must be 'fixed' or 'event', not {self.mode!r}")
        if not 0 < self.hop_s <= CLIP_SAMPLES / SAMPLE_RATE:
            raise ValueError("hop_s must be in (0, 2] seconds so that windows leave no gaps")

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * SAMPLE_RATE)


@dataclass(frozen=True)
class Window:
    """One 2 s window: where it starts, its 32,000 DC-free samples, and how many of them
    are real audio (the rest is zero padding past the end of the recording)."""

    start: int
    samples: np.ndarray
    length: int = CLIP_SAMPLES

    @property
    def offset_s(self) -> float:
        return self.start / SAMPLE_RATE

    @functools.cached_property
    def rms_db(self) -> float:
        """RMS level in dBFS of the real samples, DC removed (computed when first asked)."""
        return rms_db(self.samples[: self.length])

    @classmethod
    def cut(cls, start: int, real: np.ndarray) -> Window:
        """The window at ``start`` from up to 2 s of real samples: DC removed, zero-padded."""
        return cls(start, pad_clip(remove_dc(real)), min(len(real), CLIP_SAMPLES))


@dataclass(frozen=True)
class Event:
    """A loud region found by :func:`pick_events`, in samples at 16 kHz."""

    start: int
    end: int
    centre: int
    peak_db: float


def remove_dc(x: np.ndarray) -> np.ndarray:
    """``x`` minus its mean, as float32 (the mean is taken in float64)."""
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    return (x - np.mean(x, dtype=np.float64)).astype(np.float32)


def pad_clip(x: np.ndarray) -> np.ndarray:
    """Exactly :data:`CLIP_SAMPLES` float32 samples: ``x`` zero-padded (or cut) at the end."""
    out = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    n = min(len(x), CLIP_SAMPLES)
    out[:n] = x[:n]
    return out


def rms_db(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is about -3 dB)."""
    if x.size == 0:
        return _DB_FLOOR
    power = float(np.mean(np.square(x, dtype=np.float64)))
    return max(_DB_FLOOR, 10.0 * math.log10(power)) if power > 0 else _DB_FLOOR


class WindowCutter:
    """Streams blocks in and yields :class:`Window` s at given start offsets, keeping
    little audio.

    ``starts`` must be ascending. A window is yielded as soon as its 2 s are buffered;
    at :meth:`finish` the rest are zero-padded, and ``keep_tail(start, total)`` decides
    which of the remaining starts still deserve a window.
    """

    def __init__(self, starts: Iterator[int]) -> None:
        self._starts = starts
        self._next: int | None = next(starts, None)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute index of self._buf[0]
        self.total = 0

    def feed(self, block: np.ndarray) -> Iterator[Window]:
        self._buf = np.concatenate([self._buf, block]) if self._buf.size else block
        self.total += len(block)
        while self._next is not None and self._next + CLIP_SAMPLES <= self.total:
            yield self._window(self._next)
            self._advance()
        keep_from = self.total if self._next is None else min(self._next, self.total)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :].copy()
            self._buf_start = keep_from

    def finish(self, keep_tail: Callable[[int, int], bool]) -> Iterator[Window]:
        while (
            self._next is not None and self._next < self.total and keep_tail(self._next, self.total)
        ):
            yield self._window(self._next)
            self._advance()

    def _advance(self) -> None:
        self._next = next(self._starts, None)

    def _window(self, start: int) -> Window:
        at = start - self._buf_start
        return Window.cut(start, self._buf[at : at + CLIP_SAMPLES])


def fixed_windows(blocks: Iterable[np.ndarray], config: WindowConfig) -> Iterator[Window]:
    """Windows every ``config.hop_s`` over a stream of 16 kHz blocks."""
    hop = config.hop_samples
    cutter = WindowCutter(iter(range(0, 2**62, hop)))

    def keep_tail(start: int, total: int) -> bool:
        # The window is needed unless the previous one already reached the end.
        return start == 0 or start - hop + CLIP_SAMPLES < total

    yield from _finish(cutter, blocks, keep_tail, config)


def event_windows(
    blocks_factory: Callable[[], Iterable[np.ndarray]], config: WindowConfig
) -> Iterator[Window]:
    """One window centred on each event; reads the audio twice (envelope, then cut).

    Two passes keep memory bounded: the envelope of an hour is about 1.4 MB, and the
    second pass only buffers the audio between consecutive windows.
    """
    levels, total = frame_levels(blocks_factory())
    events = pick_events(levels, total, config)
    starts = sorted({window_start_for(e.centre, total) for e in events})
    cutter = WindowCutter(iter(starts))
    yield from _finish(cutter, blocks_factory(), lambda start, total: True, config)


def _finish(
    cutter: WindowCutter,
    blocks: Iterable[np.ndarray],
    keep_tail: Callable[[int, int], bool],
    config: WindowConfig,
) -> Iterator[Window]:
    def windows() -> Iterator[Window]:
        for block in blocks:
            yield from cutter.feed(block)
        yield from cutter.finish(keep_tail)

    for window in windows():
        if config.min_rms_db is not None and window.rms_db < config.min_rms_db:
            continue
        yield window


def window_start_for(centre: int, total: int) -> int:
    """Start of the 2 s window centred on ``centre``, kept inside the recording."""
    return max(0, min(centre - CLIP_SAMPLES // 2, total - CLIP_SAMPLES))


def frame_levels(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """RMS level (dBFS, each frame's mean removed) of 25 ms frames every 10 ms, and the
    total sample count."""
    levels: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for block in blocks:
        total += len(block)
        data = np.concatenate([carry, block]) if carry.size else block
        n = 0 if len(data) < FRAME_LENGTH else 1 + (len(data) - FRAME_LENGTH) // FRAME_HOP
        if n:
            frames = np.lib.stride_tricks.sliding_window_view(data, FRAME_LENGTH)[::FRAME_HOP][:n]
            power = np.var(frames, axis=1, dtype=np.float64)
            levels.append(10.0 * np.log10(np.maximum(power, 10 ** (_DB_FLOOR / 10))))
        carry = data[n * FRAME_HOP :].copy()
    if carry.size and (total < FRAME_LENGTH or not levels):
        power = float(np.var(carry, dtype=np.float64))
        levels.append(np.array([10.0 * math.log10(max(power, 10 ** (_DB_FLOOR / 10)))]))
    return (np.concatenate(levels) if levels else np.zeros(0)), total


def pick_events(levels_db: np.ndarray, total: int, config: WindowConfig) -> list[Event]:
    """Find loud regions in a frame envelope.

    The rule, in full:

    1. noise floor = 20th percentile of the frame levels; peak = their maximum;
    2. threshold = max(``event_floor_db``, min(floor + ``event_margin_db``, peak - 6 dB)),
       so the loudest burst of a recording always counts unless it is below the floor;
    3. frames above the threshold form regions; regions closer than
       ``event_min_gap_s`` merge, regions shorter than ``event_min_length_s`` are dropped;
    4. a region longer than 2 s is split into consecutive 2 s pieces;
    5. each event's centre is the energy-weighted centroid of its frames.
    """
    if levels_db.size == 0:
        return []
    floor = float(np.percentile(levels_db, 20))
    peak = float(levels_db.max())
    threshold = max(config.event_floor_db, min(floor + config.event_margin_db, peak - 6.0))
    loud = levels_db > threshold
    if not loud.any():
        return []

    gap_frames = max(1, round(config.event_min_gap_s * SAMPLE_RATE / FRAME_HOP))
    min_frames = max(1, round(config.event_min_length_s * SAMPLE_RATE / FRAME_HOP))
    max_frames = CLIP_SAMPLES // FRAME_HOP

    idx = np.flatnonzero(loud)
    breaks = np.flatnonzero(np.diff(idx) > gap_frames)
    region_starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    region_ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1  # exclusive

    power = 10.0 ** (levels_db / 10.0)
    events: list[Event] = []
    for r_start, r_end in zip(region_starts, region_ends, strict=True):
        if r_end - r_start < min_frames:
            continue
        for p_start in range(int(r_start), int(r_end), max_frames):
            p_end = min(p_start + max_frames, int(r_end))
            weights = power[p_start:p_end] * loud[p_start:p_end]
            frames = np.arange(p_start, p_end)
            centroid = (
                float(np.sum(frames * weights) / np.sum(weights))
                if weights.sum() > 0
                else ((p_start + p_end - 1) / 2)
            )
            centre = min(total, round(centroid * FRAME_HOP + FRAME_LENGTH / 2))
            events.append(
                Event(
                    start=p_start * FRAME_HOP,
                    end=min(total, (p_end - 1) * FRAME_HOP + FRAME_LENGTH),
                    centre=centre,
                    peak_db=float(levels_db[p_start:p_end].max()),
                )
            )
    return events
