"""A registered clip's 2 s window, read back from its source file and checked.

A clip id names a window of a recording registered earlier: the registration row says
where the file was (``audio_uri``), where the window starts (``offset_s``) and what the
file's bytes were (``content_hash``, SHA-256). Before any sample is served, the location
goes through the same audio-location policy as registration (URI schemes, audio roots),
and the file must still exist with the same content. Otherwise the caller gets an error
that says which of these failed, so a listener never hears a different sound than the
one that was embedded.

The window is cut exactly as registration and materialisation cut it
(:func:`hear_features.audio.windows_at`: decoded, downmixed, resampled to 16 kHz,
zero-padded past the end), so the audio is the encoder's input, sample for sample.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from feast import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from hear_features.audio import SAMPLE_RATE, AudioLimits, windows_at
from hear_features.audio.sources import AudioSources
from hear_features.clips import content_hash
from hear_features.errors import AudioError, SourceChangedError, SourceMovedError
from hear_features.featurestore.online.codec import python_value
from hear_features.schema import JOIN_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredClip:
    """What the registration of one clip says about its audio."""

    clip_id: str
    audio_uri: str
    offset_s: float
    content_hash: str


#: The registration features a clip's audio needs.
AUDIO_FEATURES = ["audio_uri", "offset_s", "content_hash"]


def registered_clip(
    online: OnlineStore, config: RepoConfig, registrations: FeatureView, clip_id: str
) -> RegisteredClip | None:
    """The registration of ``clip_id`` as the online store holds it (None if unknown).

    ``registrations`` is the view that ``hear-features register`` feeds
    (``clip_metadata``); any Feast online store can answer.
    """
    key = EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=clip_id)])
    ((_, values),) = online.online_read(config, registrations, [key], AUDIO_FEATURES)
    if not values:
        return None
    plain = {name: python_value(values[name]) for name in AUDIO_FEATURES if name in values}
    uri, offset, digest = (plain.get(name) for name in AUDIO_FEATURES)
    if not isinstance(uri, str) or not isinstance(digest, str) or offset is None:
        return None
    return RegisteredClip(clip_id, uri, float(offset), digest)


class ClipAudio:
    """Reads the windows of registered clips from their source files.

    Hashing a file on every request would cost a full read of a long recording, so a
    digest is remembered per (path, size, inode, mtime, ctime): any write to the file
    changes its ctime, which no user can set back, so a changed file is always hashed
    again. Thread-safe; one instance per server worker.
    """

    def __init__(
        self,
        sources: AudioSources,
        limits: AudioLimits | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.sources = sources
        self.limits = limits or AudioLimits()
        self._digests: OrderedDict[tuple[str, int, int, int, int], str] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def window(self, clip: RegisteredClip) -> np.ndarray:
        """The clip's 32,000 samples (float32, 16 kHz mono).

        Raises :class:`~hear_features.errors.SourceRefused` (location outside the
        policy), :class:`SourceMovedError` (no file there any more),
        :class:`SourceChangedError` (other bytes than registered) or
        :class:`~hear_features.errors.AudioError` (the file cannot be decoded).
        """
        path = self.verified_path(clip)
        start = round(clip.offset_s * SAMPLE_RATE)
        for window in windows_at(path, [start], self.limits):
            if window.start == start:
                return window.samples
        raise AudioError(path, f"has no window at {clip.offset_s:.3f} s")  # pragma: no cover

    def verified_path(self, clip: RegisteredClip) -> Path:
        """The local file of ``clip``, checked against the policy and the content hash."""
        path = self.sources.local_path(clip.audio_uri)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise SourceMovedError(
                path,
                f"is gone (moved or deleted since clip {clip.clip_id} was registered); "
                "register the recording again from its new place",
            ) from exc
        except OSError as exc:
            raise AudioError(path, f"cannot be read: {exc.strerror or exc}") from exc
        if not path.is_file():
            raise SourceMovedError(path, "is no longer a regular file")
        key = (str(path), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            digest = self._digests.get(key)
            if digest is not None:
                self._digests.move_to_end(key)
        if digest is None:
            digest = content_hash(path)
            with self._lock:
                self._digests[key] = digest
                while len(self._digests) > self._cache_size:
                    self._digests.popitem(last=False)
        if digest != clip.content_hash:
            raise SourceChangedError(
                path,
                # No digest in the message: it would be a hash of whatever file is there
                # now (a link to any server file), readable by anyone with a read key.
                f"has changed since clip {clip.clip_id} was registered (its bytes differ "
                "from the registered recording); register it again",
            )
        return path


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Mono float samples as a 16-bit PCM WAV file (2 s at 16 kHz: 64 KB).

    16-bit PCM plays in every browser; its quantisation (-96 dBFS) is far below anything
    a listener can hear in a cough recording.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {x.shape}")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
