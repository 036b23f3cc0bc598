"""The audio formats hear-features reads: the one list of file name endings.

Decoding does not trust a file's name: libsndfile is asked first and FFmpeg (through
PyAV) second, whatever the ending (see :mod:`hear_features.audio.readers`). The endings
matter where there is no file to open yet: which files a folder or glob holds, and what
the documentation and the API's upload field promise. Every ending here is written and
read back by the test suite (``tests/test_formats.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: Endings libsndfile decodes: WAV (also RF64/BW64), AIFF, FLAC, Ogg/Vorbis, Ogg/Opus, MP3.
LIBSNDFILE_EXTENSIONS: tuple[str, ...] = (
    ".wav",
    ".aif",
    ".aiff",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
)

#: Endings only FFmpeg decodes: WebM/Matroska (Opus: browser MediaRecorder), M4A/MP4
#: (AAC or ALAC: phones), raw AAC (ADTS), AMR-NB (.amr, .3gp: voice recorders), CAF.
FFMPEG_EXTENSIONS: tuple[str, ...] = (
    ".webm",
    ".weba",
    ".mka",
    ".m4a",
    ".mp4",
    ".aac",
    ".amr",
    ".3gp",
    ".caf",
)

#: Every ending that folder and glob discovery treats as audio.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(LIBSNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS)

#: The formats in words, for help texts and messages.
FORMATS_IN_WORDS = (
    "WAV, AIFF, FLAC, MP3, Ogg (Vorbis or Opus), WebM/Opus, M4A/MP4 (AAC or ALAC), AAC, AMR-NB, CAF"
)


def is_audio_name(path: str | Path) -> bool:
    """Whether a file's name ends in one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def skipped_by_extension(names: Iterable[str | Path]) -> dict[str, int]:
    """How many of ``names`` are not audio, by ending (``"(none)"`` for no ending).

    For the discovery report: a folder of ``.wma`` or ``.txt`` files is named as such
    rather than silently reduced to the files we read.
    """
    counts: dict[str, int] = {}
    for name in names:
        if is_audio_name(name):
            continue
        ending = Path(name).suffix.lower() or "(none)"
        counts[ending] = counts.get(ending, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
