"""Clips -> embeddings, batched across recordings.

Datasets of coughs are mostly many short files, so encoder batches are filled with
clips from consecutive recordings rather than one batch per file. Results still come
back one recording at a time, in input order, and a recording that fails half-way
contributes nothing: its queued clips are dropped, not embedded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hear_features.audio import AudioLimits, WindowConfig
from hear_features.clips import ClipRef, iter_clips
from hear_features.errors import HearFeaturesError
from hear_features.schema import CLIP_SAMPLES

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """What the pipeline needs of an encoder (HearEncoder satisfies it)."""

    @property
    def model_id(self) -> str: ...

    def encode(self, clips: np.ndarray) -> np.ndarray: ...


@dataclass
class RecordingEmbeddings:
    """All clips of one recording with their vectors, or the reason it failed."""

    source: str
    clips: list[ClipRef] = field(default_factory=list)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    error: HearFeaturesError | None = None
    decoded: bool = False

    @property
    def ready(self) -> bool:
        return self.error is not None or (self.decoded and all(v is not None for v in self.vectors))

    def matrix(self) -> np.ndarray:
        """The vectors as float32 [n_clips, dim]."""
        if not self.vectors:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([v for v in self.vectors if v is not None]).astype(np.float32, copy=False)


ClipSource = Callable[[Path], Iterable[tuple[ClipRef, np.ndarray]]]


def embed_recordings(
    paths: Iterable[Path],
    encoder: Encoder,
    *,
    batch_size: int = 64,
    window_config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
    clips_of: ClipSource | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[RecordingEmbeddings]:
    """Embed the clips of every path; yield one result per path, in order.

    By default a path's clips are all its windows (``window_config``, ``limits``);
    ``clips_of(path)`` replaces that, for example with clips at registered offsets.
    ``on_batch(n)`` is called after each encoder call with the number of clips it
    embedded (for progress bars). Problems we know (bad audio) are captured per
    recording in :attr:`RecordingEmbeddings.error`; other exceptions propagate.
    """
    if clips_of is None:

        def clips_of(path: Path) -> Iterable[tuple[ClipRef, np.ndarray]]:
            return iter_clips(path, window_config, limits)

    # Clips wait in a preallocated batch: one copy in, no stacking per encoder call.
    queue: list[tuple[RecordingEmbeddings, int]] = []
    batch = np.empty((batch_size, CLIP_SAMPLES), dtype=np.float32)
    in_flight: list[RecordingEmbeddings] = []

    def flush() -> None:
        if not queue:
            return
        vectors = encoder.encode(batch[: len(queue)])
        for (rec, i), vec in zip(queue, vectors, strict=True):
            rec.vectors[i] = vec
        if on_batch is not None:
            on_batch(len(queue))
        queue.clear()

    def finished() -> Iterator[RecordingEmbeddings]:
        while in_flight and in_flight[0].ready:
            yield in_flight.pop(0)

    for path in paths:
        rec = RecordingEmbeddings(source=str(path))
        in_flight.append(rec)
        try:
            for ref, samples in clips_of(path):
                rec.clips.append(ref)
                rec.vectors.append(None)
                batch[len(queue)] = samples
                queue.append((rec, len(rec.clips) - 1))
                if len(queue) >= batch_size:
                    flush()
                    yield from finished()
        except HearFeaturesError as exc:
            log.warning("skipping %s: %s", path, exc)
            rec.error = exc
            keep = [j for j, item in enumerate(queue) if item[0] is not rec]
            batch[: len(keep)] = batch[keep]
            queue[:] = [queue[j] for j in keep]
            rec.clips.clear()
            rec.vectors.clear()
        rec.decoded = True
        yield from finished()
    flush()
    yield from finished()
