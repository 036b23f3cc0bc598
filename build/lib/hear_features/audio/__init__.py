"""Audio in: decode any supported file to 16 kHz mono and cut it into 2 s windows."""

from __future__ import annotations

from collections.abc import Iterator

from hear_features.audio.decode import (
    AudioInfo,
    AudioLimits,
    AudioSource,
    iter_blocks,
    probe,
    read_all,
    source_name,
)
from hear_features.audio.samples import clip_from_samples
from hear_features.audio.windows import (
    Event,
    Window,
    WindowConfig,
    WindowCutter,
    event_windows,
    fixed_windows,
    pick_events,
    rms_db,
)
from hear_features.schema import CLIP_SAMPLES, SAMPLE_RATE

__all__ = [
    "CLIP_SAMPLES",
    "SAMPLE_RATE",
    "AudioInfo",
    "AudioLimits",
    "AudioSource",
    "Event",
    "Window",
    "WindowConfig",
    "clip_from_samples",
    "iter_blocks",
    "iter_windows",
    "pick_events",
    "probe",
    "read_all",
    "rms_db",
    "source_name",
    "windows_at",
]


def windows_at(
    source: AudioSource, starts: list[int], limits: AudioLimits | None = None
) -> Iterator[Window]:
    """The 2 s windows of ``source`` starting at the given sample offsets (16 kHz).

    For clips registered earlier: the offsets come from the registration table, and
    windows past the end of the audio are zero-padded as they were when registered.
    """
    cutter = WindowCutter(iter(sorted(set(starts))))
    for block in iter_blocks(source, limits):
        yield from cutter.feed(block)
    yield from cutter.finish(lambda start, total: True)


def iter_windows(
    source: AudioSource,
    config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
) -> Iterator[Window]:
    """Decode ``source`` block by block and yield its 2 s windows as ``config`` says."""
    config = config or WindowConfig()
    if config.mode == "event":
        yield from event_windows(lambda: iter_blocks(source, limits), config)
    else:
        yield from fixed_windows(iter_blocks(source, limits), config)
