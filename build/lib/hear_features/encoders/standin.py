"""A small HeAR-compatible SavedModel that the project builds itself.

The real HeAR weights are gated and large; tests, the demo and machines without a
Hugging Face token use this stand-in instead. It has HeAR's exact serving signature
(``x``: float32 [None, 32000] -> ``output_0``: float32 [None, 512]) and is loaded through
the same loader as the real model, so everything downstream is exercised for real.

Its graph is a genuine (if shallow) audio embedding, so that similar sounds land near
each other: STFT (400/160, FFT 512) -> power -> 128 mel bins over 0-8 kHz -> log ->
minus the clip's mean (gain invariance) -> mean and standard deviation over time ->
a fixed, seeded random projection to 512. Same seed, same outputs, bit for bit.

It is *not* HeAR: every vector it produces carries the model id
``hear-features/standin@v{STANDIN_VERSION}-seed{seed}`` and the CLI says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hear_features.encoders.savedmodel import (
    MARKER_FILE,
    N_MELS,
    STANDIN_KIND,
    ensure_built,
    log_mel,
    mel_weight_matrix,
    read_marker,
    write_savedmodel,
)
from hear_features.encoders.tf_runtime import import_tensorflow
from hear_features.schema import CLIP_SAMPLES, EMBEDDING_DIM

__all__ = [
    "MARKER_FILE",
    "build_standin",
    "ensure_standin",
    "log_mel_statistics",
    "mel_weight_matrix",
    "read_marker",
    "standin_model_id",
]

STANDIN_VERSION = 1


def standin_model_id(seed: int) -> str:
    return f"hear-features/standin@v{STANDIN_VERSION}-seed{seed}"


def build_standin(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the stand-in SavedModel into ``out_dir`` (which must not exist yet).

    The model is written to a temporary sibling and renamed into place, so a crash
    never leaves a half-written model that a later run would try to load.
    """
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new directory")
    module = _make_module(import_tensorflow(), seed)
    marker = {"kind": STANDIN_KIND, "version": STANDIN_VERSION, "seed": seed}
    return write_savedmodel(module, out_dir, marker)


def ensure_standin(cache_dir: Path, seed: int = 0) -> Path:
    """The cached stand-in for ``seed`` under ``cache_dir``, built on first use."""
    target = cache_dir / f"standin-v{STANDIN_VERSION}-seed{seed}"
    return ensure_built(target, lambda path: build_standin(path, seed))


def log_mel_statistics(tf: Any, x: Any, mel_matrix: Any) -> Any:
    """The stand-in's front-end: clips [B, 32000] at 16 kHz -> [B, 256] log-mel statistics.

    :func:`~hear_features.encoders.savedmodel.log_mel` (STFT 400/160, FFT 512, power,
    ``mel_matrix`` from :func:`mel_weight_matrix`, natural log, minus the clip's mean),
    then the mean and the standard deviation of each of the 128 mel bins over time,
    concatenated. The stand-in projects these to 512 dimensions; the linear probe's
    acoustic baseline uses them as they are.
    """
    features = log_mel(tf, tf.ensure_shape(x, [None, CLIP_SAMPLES]), mel_matrix)
    return tf.concat(
        [tf.reduce_mean(features, axis=1), tf.math.reduce_std(features, axis=1)], axis=-1
    )


def _make_module(tf: Any, seed: int) -> Any:
    """The tf.Module whose ``serve`` becomes the ``serving_default`` signature."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((2 * N_MELS, EMBEDDING_DIM)) / np.sqrt(2 * N_MELS)
    mel_matrix = mel_weight_matrix(tf)

    class StandInHeAR(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="standin_hear")
            self.mel_matrix = tf.Variable(mel_matrix, trainable=False, name="mel_matrix")
            # Cast after dividing: numpy 2 promotes float32 / float64 to float64.
            self.projection = tf.Variable(
                projection.astype(np.float32), trainable=False, name="projection"
            )

        @tf.function(input_signature=[tf.TensorSpec([None, CLIP_SAMPLES], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            stats = log_mel_statistics(tf, x, self.mel_matrix)
            return {"output_0": tf.matmul(stats, self.projection)}

    return StandInHeAR()
