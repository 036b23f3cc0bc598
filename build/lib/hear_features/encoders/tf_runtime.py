"""Importing TensorFlow once, quietly, and choosing the device it runs on.

TensorFlow takes seconds to import, so nothing imports it at module level: encoders call
:func:`import_tensorflow` when they are built. Device choice is a pure function
(:func:`choose_device`) so the selection rules are testable on machines with no GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import ModuleType

from hear_features.devices import wants_gpu
from hear_features.quiet import filtered_stderr

log = logging.getLogger(__name__)


def import_tensorflow() -> ModuleType:
    """Import TensorFlow with its C++ chatter reduced, and GPU memory growth enabled.

    ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) silences the runtime's INFO and WARNING logs;
    the lines it prints while loading, before it reads that variable, are dropped by
    :func:`hear_features.quiet.filtered_stderr` (any other output passes through).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # RuntimeError: the runtime is already initialised, and growth was set back then.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return tf


def choose_device(requested: str, n_gpus: int) -> str:
    """The TensorFlow device string for a request, given how many GPUs are visible
    (the rules are :func:`hear_features.devices.wants_gpu`'s)."""
    missing = (
        "a GPU was requested but TensorFlow sees none: install the `gpu` extra "
        "(tensorflow[and-cuda]) and check `nvidia-smi`, or use --device cpu"
    )
    return "/GPU:0" if wants_gpu(requested, n_gpus, missing=missing) else "/CPU:0"


def resolve_device(requested: str) -> str:
    """:func:`choose_device` for the GPUs TensorFlow can see in this process."""
    tf = import_tensorflow()
    device = choose_device(requested, len(tf.config.list_physical_devices("GPU")))
    log.info("TensorFlow encoder runs on %s", device)
    return device
