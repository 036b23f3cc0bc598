"""What the project's own SavedModels share: the log-mel front-end, the marker, saving.

The project builds two kinds of HeAR-compatible SavedModel (``x``: float32 [None, 32000]
-> ``output_0``: float32 [None, 512]): the small stand-in used by tests and the demo
(:mod:`~hear_features.encoders.standin`), and a HeAR-sized ViT with random weights used
to measure what the real model costs (:mod:`~hear_features.encoders.vit`). Both are
written the same way (to a temporary sibling, then renamed into place) and both carry a
marker file that names the model, so every vector they produce says it is not HeAR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hear_features.encoders.tf_runtime import import_tensorflow
from hear_features.schema import SAMPLE_RATE

#: A file next to ``saved_model.pb`` that marks a directory as one of our own models.
MARKER_FILE = "hear_features_standin.json"
#: Marker kinds this version writes and reads.
STANDIN_KIND = "hear-features-standin"
VIT_KIND = "hear-features-vit"

N_FFT = 512
FRAME_LENGTH = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
N_MELS = 128


def read_marker(model_dir: Path) -> dict[str, object] | None:
    """The marker of ``model_dir``, or None when it is not one of the project's models."""
    path = model_dir / MARKER_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") not in (STANDIN_KIND, VIT_KIND):
        return None
    return data


def mel_weight_matrix(tf: Any) -> Any:
    """float32 [257, 128]: FFT bins (512-point FFT at 16 kHz) to 128 mel bins over 0-8 kHz."""
    return tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=N_MELS,
        num_spectrogram_bins=N_FFT // 2 + 1,
        sample_rate=SAMPLE_RATE,
        lower_edge_hertz=0.0,
        upper_edge_hertz=SAMPLE_RATE / 2,
    )


def log_mel(tf: Any, x: Any, mel_matrix: Any) -> Any:
    """float32 [B, 32000] samples -> [B, 198, 128] natural-log mel power, minus each clip's mean.

    STFT with 25 ms frames every 10 ms (FFT 512); subtracting the clip's mean makes the
    result independent of the recording's gain.
    """
    stft = tf.signal.stft(x, FRAME_LENGTH, FRAME_STEP, fft_length=N_FFT)
    power = tf.math.square(tf.math.abs(stft))
    mel = tf.tensordot(power, mel_matrix, axes=1)
    out = tf.math.log(mel + 1e-6)
    return out - tf.reduce_mean(out, axis=[1, 2], keepdims=True)


def write_savedmodel(
    module: Any, out_dir: str | os.PathLike[str], marker: dict[str, object]
) -> Path:
    """Save ``module`` (with a ``serve`` tf.function) and its marker into ``out_dir``.

    ``out_dir`` must not exist yet. The model is written to a temporary sibling and
    renamed into place, so a crash never leaves a half-written model that a later run
    would try to load. Raises ``FileExistsError`` when ``out_dir`` exists.
    """
    target = Path(out_dir)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tf = import_tensorflow()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        (tmp / MARKER_FILE).write_text(json.dumps(marker))
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_built(target: Path, build: Callable[[Path], Path]) -> Path:
    """``target`` when it holds one of our models, else ``build(target)`` (once, race-safe)."""
    if (target / "saved_model.pb").is_file() and read_marker(target):
        return target
    if target.exists():  # left over from an older layout or a foreign write: rebuild
        shutil.rmtree(target)
    try:
        return build(target)
    except FileExistsError:  # another process won the race; its rename is complete
        return target
