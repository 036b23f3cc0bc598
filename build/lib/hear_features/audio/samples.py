"""Raw sample arrays (not files) -> one 2 s HeAR clip.

For audio that arrives already decoded: a Feast request field, a JSON body. The same
rules as for files apply: mono, finite, a plausible rate, resampled to 16 kHz.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soxr

from hear_features.audio.decode import AudioLimits
from hear_features.audio.windows import Window, remove_dc
from hear_features.errors import AudioError
from hear_features.schema import CLIP_SAMPLES, SAMPLE_RATE


def clip_from_samples(
    samples: Sequence[float] | np.ndarray,
    sample_rate: int,
    *,
    name: str = "<request audio>",
    limits: AudioLimits | None = None,
) -> np.ndarray:
    """Exactly 32,000 float32 samples at 16 kHz from at most 2 s of mono audio.

    The DC offset is removed and shorter audio is zero-padded at the end, exactly as a
    window cut from a file is (:meth:`hear_features.audio.Window.cut`); longer audio is
    refused, because a clip is one 2 s window (cut longer audio with
    :func:`hear_features.audio.iter_windows`).
    """
    limits = limits or AudioLimits()
    try:
        x = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(name, f"samples must be a flat list of numbers: {exc}") from exc
    if x.ndim != 1:
        raise AudioError(name, f"samples must be one mono channel, got shape {list(x.shape)}")
    if x.size == 0:
        raise AudioError(name, "holds no audio samples")
    if not np.isfinite(x).all():
        raise AudioError(name, "contains NaN or infinite samples")
    if not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:
        raise AudioError(
            name,
            f"has an unsupported sample rate of {sample_rate} Hz "
            f"(accepted: {limits.min_sample_rate}-{limits.max_sample_rate} Hz)",
        )
    if sample_rate != SAMPLE_RATE:
        # DC out first, so the resampler does not ring at the offset's edges.
        x = soxr.resample(remove_dc(x), sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if len(x) > CLIP_SAMPLES + 1:  # one sample of slack for resampling round-off
        seconds = len(x) / SAMPLE_RATE
        raise AudioError(name, f"is {seconds:.2f} s long; one clip is at most 2 s")
    return Window.cut(0, x[:CLIP_SAMPLES]).samples
