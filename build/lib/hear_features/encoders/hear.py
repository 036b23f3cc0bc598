"""The HeAR encoder: a TF SavedModel called through its ``serving_default`` signature.

The same loader serves the real ``google/hear`` weights and the project's stand-in.
Before a model is accepted, its signature is checked against HeAR's
(``x``: float32 [None, 32000] -> ``output_0``: [None, 512]) and it is called once on a
probe batch, so a wrong directory fails at load time with a message, not at the first
batch of a long job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hear_features.defaults import DEFAULT_BATCH_SIZE
from hear_features.encoders.resolve import ResolvedModel, resolve_model
from hear_features.encoders.tf_runtime import import_tensorflow, resolve_device
from hear_features.errors import InputShapeError, InvalidModelError
from hear_features.schema import CLIP_SAMPLES, EMBEDDING_DIM

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
INPUT_NAME = "x"
OUTPUT_NAME = "output_0"


@dataclass(frozen=True)
class EncoderInfo:
    """What produced a vector; stored beside every embedding."""

    model_id: str
    is_standin: bool
    device: str
    batch_size: int


class HearEncoder:
    """Embeds 2 s clips (float32 [B, 32000] at 16 kHz) into float32 [B, 512].

    Build one with :meth:`load` and pass it to whatever needs embeddings; it holds the
    loaded graph, so creating one per call would reload the model each time.
    """

    def __init__(
        self, model: ResolvedModel, *, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto"
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.info = EncoderInfo(
            model.model_id, model.is_standin, resolve_device(device), batch_size
        )
        self.path = model.path
        self._tf = import_tensorflow()
        # Keep the loaded object alive as long as the function: it owns the variables.
        self._saved_model, self._fn = load_serving_signature(model.path, self._tf)
        self.calls = 0  # batches sent to the model, for tests and metrics
        self._probe()

    @classmethod
    def load(
        cls,
        spec: str | None = None,
        *,
        revision: str | None = None,
        token: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "auto",
        cache_dir: Path | None = None,
    ) -> HearEncoder:
        """Resolve ``spec`` (``standin``, a directory or a hub repo id) and load it."""
        model = resolve_model(spec, revision=revision, token=token, cache_dir=cache_dir)
        return cls(model, batch_size=batch_size, device=device)

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def is_standin(self) -> bool:
        return self.info.is_standin

    def describe(self) -> str:
        """One line for people: which model, and whether it is really HeAR."""
        kind = "stand-in encoder, not HeAR" if self.is_standin else "HeAR SavedModel"
        return f"{self.model_id} ({kind}) on {self.info.device}, batch {self.info.batch_size}"

    def encode(self, clips: np.ndarray) -> np.ndarray:
        """Embed ``clips``; each row's vector depends on that row alone, not its batch."""
        batch = validate_clips(clips)
        out = np.empty((len(batch), EMBEDDING_DIM), dtype=np.float32)
        size = self.info.batch_size
        for i in range(0, len(batch), size):
            out[i : i + size] = self._run(batch[i : i + size])
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        tf = self._tf
        with tf.device(self.info.device):
            result = self._fn(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME]
        self.calls += 1
        vectors = np.asarray(result, dtype=np.float32)
        if vectors.shape != (len(batch), EMBEDDING_DIM):
            raise InvalidModelError(
                f"{self.model_id} returned shape {vectors.shape} for {len(batch)} clips; "
                f"expected ({len(batch)}, {EMBEDDING_DIM})"
            )
        if not np.isfinite(vectors).all():
            raise InvalidModelError(f"{self.model_id} returned NaN or infinite values")
        return vectors

    def _probe(self) -> None:
        probe = np.random.default_rng(0).standard_normal((2, CLIP_SAMPLES)).astype(np.float32) * 0.1
        try:
            self._run(probe)
        except InvalidModelError:
            raise
        except Exception as exc:  # TF raises many types; all mean "not a HeAR model"
            raise InvalidModelError(
                f"{self.path} loads but fails on a [2, {CLIP_SAMPLES}] float32 probe: {exc}"
            ) from exc
        self.calls = 0


def validate_clips(clips: Any) -> np.ndarray:
    """Check that ``clips`` is finite float [B, 32000]; return it as contiguous float32."""
    arr = np.asarray(clips)
    if arr.ndim == 1 and arr.shape[0] == CLIP_SAMPLES:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != CLIP_SAMPLES:
        raise InputShapeError(
            f"clips must have shape [batch, {CLIP_SAMPLES}] (2 s at 16 kHz); got {list(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise InputShapeError("no clips to encode (batch of size 0)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputShapeError(f"clips must be floating-point samples in [-1, 1]; got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise InputShapeError(f"clips contain NaN or infinite samples (rows {rows[:5].tolist()})")
    return arr


def load_serving_signature(path: Path, tf: Any) -> tuple[Any, Any]:
    """Load a SavedModel; return it and its HeAR-shaped serving function, or say why not."""
    if not path.is_dir():
        raise InvalidModelError(f"{path} is not a directory")
    if not ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()):
        raise InvalidModelError(
            f"{path} is not a TensorFlow SavedModel (no saved_model.pb). A HeAR model "
            "directory holds saved_model.pb and variables/, as in the google/hear repository."
        )
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise InvalidModelError(f"{path} could not be loaded as a SavedModel: {exc}") from exc
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE not in signatures:
        raise InvalidModelError(
            f"{path} has no '{SIGNATURE}' signature (found: {sorted(signatures) or 'none'})"
        )
    fn = signatures[SIGNATURE]
    _check_signature(path, fn)
    return loaded, fn


def _check_signature(path: Path, fn: Any) -> None:
    _, kwargs = fn.structured_input_signature
    spec = kwargs.get(INPUT_NAME)
    if spec is None or len(kwargs) != 1:
        raise InvalidModelError(
            f"{path}: '{SIGNATURE}' must take one input named '{INPUT_NAME}'; "
            f"it takes {sorted(kwargs)}"
        )
    shape = spec.shape.as_list() if spec.shape.rank is not None else None
    if (
        spec.dtype.name != "float32"
        or shape is None
        or len(shape) != 2
        or shape[1]
        not in (
            CLIP_SAMPLES,
            None,
        )
    ):
        raise InvalidModelError(
            f"{path}: input '{INPUT_NAME}' is {spec.dtype.name} {shape}; "
            f"HeAR takes float32 [None, {CLIP_SAMPLES}]"
        )
    outputs = fn.structured_outputs
    out = outputs.get(OUTPUT_NAME) if isinstance(outputs, dict) else None
    if out is None:
        found = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise InvalidModelError(
            f"{path}: '{SIGNATURE}' has no output '{OUTPUT_NAME}' (found {found})"
        )
    out_shape = out.shape.as_list() if out.shape.rank is not None else None
    if out_shape is not None and (len(out_shape) != 2 or out_shape[1] not in (EMBEDDING_DIM, None)):
        raise InvalidModelError(
            f"{path}: output '{OUTPUT_NAME}' has shape {out_shape}; "
            f"HeAR gives [None, {EMBEDDING_DIM}]"
        )
