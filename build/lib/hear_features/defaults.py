"""Defaults and environment variables that every layer shares, importable at no cost.

The CLI builds its options (and answers ``--help``) from these before anything heavy
(numpy, pyarrow, TensorFlow, Feast) is imported, so this module imports nothing but
``os``. ``HEAR_MODEL`` is read here and nowhere else.
"""

from __future__ import annotations

import os
from typing import Final

#: The encoder used when nothing else is configured: Google's HeAR on the Hugging Face Hub.
DEFAULT_MODEL: Final = "google/hear"
#: The model spec naming the project's stand-in encoder (not HeAR).
STANDIN: Final = "standin"
#: The model spec naming a ViT of HeAR's size with random weights (for cost measurements).
HEAR_SIZED: Final = "hear-sized"
#: Environment variable that overrides the configured encoder.
MODEL_ENV: Final = "HEAR_MODEL"
#: Clips per encoder call.
DEFAULT_BATCH_SIZE: Final = 64
#: The endings ``--out`` accepts, and what each writes (:mod:`hear_features.outputs`).
OUTPUT_FORMATS: Final[dict[str, str]] = {
    ".parquet": "Parquet",
    ".csv": "CSV",
    ".jsonl": "JSON lines",
}


def model_from_env() -> str | None:
    """``$HEAR_MODEL``, when set."""
    return os.environ.get(MODEL_ENV) or None


def model_spec(explicit: str | None = None, configured: str | None = None) -> str:
    """Which model to use: an explicit choice (``--model``), else ``$HEAR_MODEL``, else
    the configured one (``feature_store.yaml``), else :data:`DEFAULT_MODEL`."""
    return explicit or model_from_env() or configured or DEFAULT_MODEL
