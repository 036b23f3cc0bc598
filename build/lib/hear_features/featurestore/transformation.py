"""The body of the ``hear_embedding`` on-demand transformations (python mode).

Feast passes the request columns as lists: ``audio`` (float samples, mono, at most 2 s)
and ``sample_rate`` (Hz). The answer holds the 512-d ``embedding`` and the ``model_id``
of the encoder that made it.

Feast calls every python-mode transformation once at ``feast apply`` with placeholder
inputs to check its output types (one sample, at 1 Hz). No audio is sampled at 1 Hz, so
such a call is answered with zero vectors without loading the model; any other invalid
input is an :class:`~hear_features.errors.AudioError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hear_features.audio import clip_from_samples
from hear_features.embedding import Encoder
from hear_features.featurestore import runtime
from hear_features.schema import EMBEDDING_DIM

#: Feast's placeholder for an Int32 request field at ``feast apply``.
_FEAST_PLACEHOLDER_RATE = 1


def embed_request_audio(
    inputs: dict[str, list[Any]], encoder: Encoder | None = None
) -> dict[str, list[Any]]:
    """Embed each row's clip; ``encoder`` defaults to the process's active one."""
    audio = inputs["audio"]
    rates = [int(r) for r in inputs["sample_rate"]]
    if len(audio) != len(rates):
        raise ValueError("audio and sample_rate columns differ in length")
    if not rates:
        return {"embedding": [], "model_id": []}
    if all(r == _FEAST_PLACEHOLDER_RATE for r in rates):
        return {
            "embedding": [[0.0] * EMBEDDING_DIM for _ in rates],
            "model_id": ["" for _ in rates],
        }
    clips = np.stack(
        [
            clip_from_samples(samples, rate, name=f"request audio row {i}")
            for i, (samples, rate) in enumerate(zip(audio, rates, strict=True))
        ]
    )
    encoder = encoder or runtime.active_encoder()
    vectors = encoder.encode(clips)
    return {
        "embedding": [v.tolist() for v in vectors],
        "model_id": [encoder.model_id] * len(vectors),
    }
