"""A 2 s window as a log-mel spectrogram picture (PNG), for judging a sound by eye.

The analysis matches HeAR's published front-end where it matters for looking: frames of
25 ms (400 samples) every 10 ms (160), a 512-point FFT, mel bands over 0-8 kHz. The
picture shows decibels relative to the window's own peak over an ``top_db`` range (a
quiet cough is as legible as a loud one), low frequencies at the bottom, coloured with
matplotlib's perceptually uniform ``magma`` map. Rendering is numpy plus Pillow (no
figure, no axes): a few milliseconds per window.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from hear_features.audio import SAMPLE_RATE

FRAME = 400
HOP = 160
N_FFT = 512
N_MELS = 64
F_MAX = 8_000.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale (the one TensorFlow's ``linear_to_mel_weight_matrix`` uses)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, f_max: float = F_MAX
) -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)``, float32."""
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, top_db: float = 80.0
) -> np.ndarray:
    """Log-mel power in dB relative to the peak, clipped to ``[-top_db, 0]``.

    ``samples``: 1-D float audio (at least one frame long). Returns ``(n_mels, frames)``
    float32 with frames = 1 + (len - 400) // 160 (198 for a 2 s window at 16 kHz).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or len(x) < FRAME:
        raise ValueError(f"expected at least {FRAME} mono samples, got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]
    window = np.hanning(FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, n=N_FFT, axis=1)) ** 2
    # einsum, not BLAS: a multi-threaded BLAS call this small waits for busy cores
    # (50 ms instead of 1 on a loaded 2-core server).
    fb = mel_filterbank(sample_rate=sample_rate)
    mel = np.einsum("mf,tf->mt", fb, power.astype(np.float32), optimize=False)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.clip(db - db.max(), -top_db, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _colours() -> np.ndarray:
    from matplotlib import colormaps  # imported on first use: ~0.1 s

    return (colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def spectrogram_png(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, scale: int = 1, top_db: float = 80.0
) -> bytes:
    """The window's log-mel spectrogram as PNG bytes, each cell ``scale`` pixels square
    (2 s at 16 kHz, scale 1: 198 x 64 pixels; browsers scale it up)."""
    from PIL import Image

    db = log_mel(samples, sample_rate, top_db)
    levels = np.round((db + top_db) / top_db * 255).astype(np.uint8)[::-1]  # low at bottom
    rgb = _colours()[levels]
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
