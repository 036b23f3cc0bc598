"""A small synthetic, labelled corpus of cough-, breath- and speech-like sounds.

Used by the demo, the tests and the benchmarks, because real health recordings cannot
ship with the project. The sounds are crude but acoustically distinct in the ways that
matter to a log-mel embedding:

* ``cough``: a sharp noise burst (fast attack, ~0.3 s decay) shaped by two resonances
  whose centre frequencies are specific to each synthetic subject, then a short voiced
  tail;
* ``breath``: low-passed noise under a slow inhale/exhale envelope;
* ``speech``: a harmonic series with vibrato, gated into syllables.

Everything is generated from a seed with numpy alone (FFT filtering, no scipy).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

LABELS = ("cough", "breath", "speech")

#: (container, libsndfile subtype, sample rate) cycled over the corpus to exercise decoding.
_FORMATS = (
    ("wav", "PCM_16", 16_000),
    ("flac", "PCM_24", 44_100),
    ("ogg", "VORBIS", 48_000),
    ("mp3", "MPEG_LAYER_III", 22_050),
)


@dataclass(frozen=True)
class SyntheticItem:
    path: Path
    label: str
    subject_id: str
    sample_rate: int


def _band_noise(
    rng: np.random.Generator, n: int, sr: int, bands: list[tuple[float, float, float]]
) -> np.ndarray:
    """White noise shaped by Gaussian resonances (centre Hz, width Hz, gain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    shape = np.zeros_like(freqs)
    for centre, width, gain in bands:
        shape += gain * np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    out = np.fft.irfft(spectrum * shape, n)
    return out / (np.max(np.abs(out)) + 1e-9)


def cough(rng: np.random.Generator, sr: int, subject: int, seconds: float = 2.5) -> np.ndarray:
    """One cough-like burst somewhere in the first half, with subject-specific colour."""
    n = int(seconds * sr)
    x = np.zeros(n)
    burst_n = int(0.45 * sr)
    f1 = 600 + 450 * subject + rng.uniform(-60, 60)
    f2 = 2200 + 700 * ((subject * 2) % 5) + rng.uniform(-100, 100)
    burst = _band_noise(rng, burst_n, sr, [(f1, 250, 1.0), (f2, 500, 0.6)])
    t = np.arange(burst_n) / sr
    envelope = (1 - np.exp(-t / 0.005)) * np.exp(-t / 0.09)
    voiced = np.sin(2 * np.pi * (180 + 30 * subject) * t) * np.exp(-(((t - 0.2) / 0.06) ** 2)) * 0.3
    start = int(rng.uniform(0.3, 0.9) * sr)
    x[start : start + burst_n] += 0.8 * burst * envelope + voiced
    return x + 0.002 * rng.standard_normal(n)


def breath(rng: np.random.Generator, sr: int, subject: int, seconds: float = 3.0) -> np.ndarray:
    """Low, airy noise under a slow inhale/exhale envelope."""
    n = int(seconds * sr)
    noise = _band_noise(rng, n, sr, [(350 + 40 * subject, 300, 1.0), (1200, 500, 0.25)])
    t = np.arange(n) / sr
    rate = rng.uniform(0.45, 0.65)
    envelope = 0.35 * np.clip(np.sin(2 * np.pi * rate * t), 0, None) ** 1.5 + 0.03
    return noise * envelope


def speech(rng: np.random.Generator, sr: int, subject: int, seconds: float = 3.0) -> np.ndarray:
    """Harmonic 'vowels' with vibrato, gated into four syllables a second."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 110 + 25 * subject + rng.uniform(-5, 5)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    gate = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, np.pi)), 0, None)
    return 0.3 * x * gate / 3


_GENERATORS = {"cough": cough, "breath": breath, "speech": speech}


def write_corpus(
    out_dir: Path, *, subjects: int = 3, per_label: int = 3, seed: int = 0
) -> list[SyntheticItem]:
    """Write ``subjects * per_label * 3`` recordings plus ``manifest.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items: list[SyntheticItem] = []
    i = 0
    for subject in range(subjects):
        for label in LABELS:
            for take in range(per_label):
                ext, subtype, sr = _FORMATS[i % len(_FORMATS)]
                i += 1
                signal = _GENERATORS[label](rng, sr, subject)
                path = out_dir / f"s{subject}_{label}_{take}.{ext}"
                sf.write(path, signal.astype(np.float32), sr, subtype=subtype)
                items.append(SyntheticItem(path, label, f"subject-{subject}", sr))
    with (out_dir / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "subject_id", "dataset", "device"])
        for item in items:
            writer.writerow([item.path.name, item.label, item.subject_id, "synthetic", "simulated"])
    return items
