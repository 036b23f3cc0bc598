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
from typing import Literal

from hear_features.errors import DeviceError

log = logging.getLogger(__name__)

DeviceRequest = Literal["auto", "cpu", "gpu"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "gpu")


def import_tensorflow() -> ModuleType:
    """Import TensorFlow with its C++ chatter reduced, and GPU memory growth enabled."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # RuntimeError: the runtime is already initialised, and growth was set back then.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return tf


def choose_device(requested: str, n_gpus: int) -> str:
    """The TensorFlow device string for a request, given how many GPUs are visible.

    ``auto`` takes the first GPU when there is one and the CPU otherwise; ``gpu`` without
    a GPU is an error rather than a silent fallback, because the user asked for speed.
    """
    if requested not in DEVICE_CHOICES:
        raise DeviceError(
            f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}"
        )
    if requested == "cpu":
        return "/CPU:0"
    if n_gpus > 0:
        return "/GPU:0"
    if requested == "gpu":
        raise DeviceError(
            "a GPU was requested but TensorFlow sees none: install the `gpu` extra "
            "(tensorflow[and-cuda]) and check `nvidia-smi`, or use --device cpu"
        )
    return "/CPU:0"


def resolve_device(requested: str) -> str:
    """:func:`choose_device` for the GPUs TensorFlow can see in this process."""
    tf = import_tensorflow()
    device = choose_device(requested, len(tf.config.list_physical_devices("GPU")))
    log.info("TensorFlow encoder runs on %s", device)
    return device
