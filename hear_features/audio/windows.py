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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hear_features.audio.decode import SAMPLE_RATE

#: Samples in one HeAR input window: 2 s at 16 kHz.
CLIP_SAMPLES = 32_000

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
    """One 2 s window: where it starts in the recording and its 32,000 samples."""

    start: int
    samples: np.ndarray

    @property
    def offset_s(self) -> float:
        return self.start / SAMPLE_RATE

    @functools.cached_property
    def rms_db(self) -> float:
        """The window's RMS level in dBFS (computed when first asked for)."""
        return rms_db(self.samples)


@dataclass(frozen=True)
class Event:
    """A loud region found by :func:`pick_events`, in samples at 16 kHz."""

    start: int
    end: int
    centre: int
    peak_db: float


def rms_db(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is about -3 dB)."""
    if x.size == 0:
        return _DB_FLOOR
    power = float(np.mean(np.square(x, dtype=np.float64)))
    return max(_DB_FLOOR, 10.0 * math.log10(power)) if power > 0 else _DB_FLOOR


def fixed_window_count(n_samples: int, hop: int) -> int:
    """Windows needed to cover ``n_samples`` with the last one zero-padded."""
    if n_samples <= 0:
        return 0
    if n_samples <= CLIP_SAMPLES:
        return 1
    return 1 + math.ceil((n_samples - CLIP_SAMPLES) / hop)


class WindowCutter:
    """Streams blocks in and yields windows at given start offsets, keeping little audio.

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

    def feed(self, block: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        self._buf = np.concatenate([self._buf, block]) if self._buf.size else block
        self.total += len(block)
        while self._next is not None and self._next + CLIP_SAMPLES <= self.total:
            yield self._next, self._slice(self._next)
            self._advance()
        keep_from = self.total if self._next is None else min(self._next, self.total)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :].copy()
            self._buf_start = keep_from

    def finish(self, keep_tail: Callable[[int, int], bool]) -> Iterator[tuple[int, np.ndarray]]:
        while (
            self._next is not None and self._next < self.total and keep_tail(self._next, self.total)
        ):
            yield self._next, self._slice(self._next)
            self._advance()

    def _advance(self) -> None:
        self._next = next(self._starts, None)

    def _slice(self, start: int) -> np.ndarray:
        out = np.zeros(CLIP_SAMPLES, dtype=np.float32)
        chunk = self._buf[start - self._buf_start : start - self._buf_start + CLIP_SAMPLES]
        out[: len(chunk)] = chunk
        return out


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
    def pairs() -> Iterator[tuple[int, np.ndarray]]:
        for block in blocks:
            yield from cutter.feed(block)
        yield from cutter.finish(keep_tail)

    for start, samples in pairs():
        window = Window(start, samples)
        if config.min_rms_db is not None and window.rms_db < config.min_rms_db:
            continue
        yield window


def window_start_for(centre: int, total: int) -> int:
    """Start of the 2 s window centred on ``centre``, kept inside the recording."""
    return max(0, min(centre - CLIP_SAMPLES // 2, total - CLIP_SAMPLES))


def frame_levels(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """RMS level (dBFS) of 25 ms frames every 10 ms, and the total sample count."""
    levels: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for block in blocks:
        total += len(block)
        data = np.concatenate([carry, block]) if carry.size else block
        n = 0 if len(data) < FRAME_LENGTH else 1 + (len(data) - FRAME_LENGTH) // FRAME_HOP
        if n:
            frames = np.lib.stride_tricks.sliding_window_view(data, FRAME_LENGTH)[::FRAME_HOP][:n]
            power = np.mean(np.square(frames, dtype=np.float64), axis=1)
            levels.append(10.0 * np.log10(np.maximum(power, 10 ** (_DB_FLOOR / 10))))
        carry = data[n * FRAME_HOP :].copy()
    if carry.size and (total < FRAME_LENGTH or not levels):
        power = float(np.mean(np.square(carry, dtype=np.float64)))
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
