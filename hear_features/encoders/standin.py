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

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hear_features.encoders.tf_runtime import import_tensorflow

STANDIN_VERSION = 1
#: A file next to ``saved_model.pb`` that marks a directory as our stand-in.
MARKER_FILE = "hear_features_standin.json"

_N_FFT = 512
_FRAME_LENGTH = 400
_FRAME_STEP = 160
_N_MELS = 128
_EMBEDDING_DIM = 512
_CLIP_SAMPLES = 32_000


def standin_model_id(seed: int) -> str:
    return f"hear-features/standin@v{STANDIN_VERSION}-seed{seed}"


def read_marker(model_dir: Path) -> dict[str, object] | None:
    """The stand-in marker of ``model_dir``, or None when it is not our stand-in."""
    path = model_dir / MARKER_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "hear-features-standin" else None


def build_standin(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the stand-in SavedModel into ``out_dir`` (which must not exist yet).

    The model is written to a temporary sibling and renamed into place, so a crash
    never leaves a half-written model that a later run would try to load.
    """
    target = Path(out_dir)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tf = import_tensorflow()
    module = _make_module(tf, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        marker = {"kind": "hear-features-standin", "version": STANDIN_VERSION, "seed": seed}
        (tmp / MARKER_FILE).write_text(json.dumps(marker))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_standin(cache_dir: Path, seed: int = 0) -> Path:
    """The cached stand-in for ``seed`` under ``cache_dir``, built on first use."""
    target = cache_dir / f"standin-v{STANDIN_VERSION}-seed{seed}"
    if (target / "saved_model.pb").is_file() and read_marker(target):
        return target
    if target.exists():  # left over from an older layout or a foreign write: rebuild
        shutil.rmtree(target)
    try:
        return build_standin(target, seed)
    except FileExistsError:  # another process won the race; its rename is complete
        return target


def _make_module(tf: Any, seed: int) -> Any:
    """The tf.Module whose ``serve`` becomes the ``serving_default`` signature."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((2 * _N_MELS, _EMBEDDING_DIM)) / np.sqrt(2 * _N_MELS)
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=_N_MELS,
        num_spectrogram_bins=_N_FFT // 2 + 1,
        sample_rate=16_000,
        lower_edge_hertz=0.0,
        upper_edge_hertz=8_000.0,
    )

    class StandInHeAR(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="standin_hear")
            self.mel_matrix = tf.Variable(mel_matrix, trainable=False, name="mel_matrix")
            # Cast after dividing: numpy 2 promotes float32 / float64 to float64.
            self.projection = tf.Variable(
                projection.astype(np.float32), trainable=False, name="projection"
            )

        @tf.function(input_signature=[tf.TensorSpec([None, _CLIP_SAMPLES], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            x = tf.ensure_shape(x, [None, _CLIP_SAMPLES])
            stft = tf.signal.stft(x, _FRAME_LENGTH, _FRAME_STEP, fft_length=_N_FFT)
            power = tf.math.square(tf.math.abs(stft))
            mel = tf.tensordot(power, self.mel_matrix, axes=1)
            log_mel = tf.math.log(mel + 1e-6)
            log_mel -= tf.reduce_mean(log_mel, axis=[1, 2], keepdims=True)
            stats = tf.concat(
                [tf.reduce_mean(log_mel, axis=1), tf.math.reduce_std(log_mel, axis=1)], axis=-1
            )
            return {"output_0": tf.matmul(stats, self.projection)}

    return StandInHeAR()
