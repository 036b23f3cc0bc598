"""Where work runs: one vocabulary (``auto``, ``cpu``, ``gpu``) for the encoder and the index.

``auto`` takes a GPU when one is usable and the CPU otherwise; ``cpu`` never uses a GPU;
``gpu`` requires one and is an error without it, rather than a silent fallback, because
whoever asked for it wanted the speed. TensorFlow (:mod:`hear_features.encoders.tf_runtime`)
and FAISS (:mod:`hear_features.index.gpu`) count their own GPUs and ask :func:`wants_gpu`.

The index once spelled its setting ``use_gpu: auto | never | always``; ``never`` and
``always`` still work, with a warning, as ``cpu`` and ``gpu``.
"""

from __future__ import annotations

import warnings
from typing import Final, Literal, cast

from hear_features.errors import DeviceError

Device = Literal["auto", "cpu", "gpu"]
DEVICES: Final = ("auto", "cpu", "gpu")
_OLD_SPELLINGS: Final = {"never": "cpu", "always": "gpu"}


def parse_device(value: str, *, setting: str = "device") -> Device:
    """``value`` in our vocabulary; the old ``never``/``always`` with a deprecation warning."""
    if value in _OLD_SPELLINGS:
        new = _OLD_SPELLINGS[value]
        warnings.warn(
            f"{setting}: {value} is deprecated; write device: {new}", FutureWarning, stacklevel=3
        )
        value = new
    if value not in DEVICES:
        raise DeviceError(f"unknown device {value!r}; choose one of {', '.join(DEVICES)}")
    return cast(Device, value)


def wants_gpu(requested: str, n_gpus: int, *, missing: str) -> bool:
    """Whether to run on a GPU, given ``n_gpus`` usable ones.

    ``missing`` is the message of the :class:`DeviceError` raised when ``gpu`` is asked
    for and none is usable: it should say why and what to do.
    """
    device = parse_device(requested)
    if device == "cpu":
        return False
    if n_gpus > 0:
        return True
    if device == "gpu":
        raise DeviceError(missing)
    return False
