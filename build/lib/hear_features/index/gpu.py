"""Whether to search on a GPU, and moving an index there.

The ``faiss-gpu`` and ``faiss-cpu`` wheels install the same ``faiss`` module; the GPU one
imports fine on a machine without a GPU but never falls back by itself. So the choice
is explicit, in the vocabulary of :mod:`hear_features.devices`: with ``device: auto`` a
GPU is used when the module has GPU support and sees a device; ``cpu`` never uses one;
``gpu`` without one is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hear_features.devices import wants_gpu

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    use_gpu: bool
    reason: str


def gpu_count(faiss: ModuleType) -> int:
    """Visible GPUs for this FAISS build (0 for a CPU build)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a GPU build on a machine without a driver
        return 0


def choose_device(setting: str, n_gpus: int, has_gpu_build: bool) -> DeviceChoice:
    """Pure selection logic (tested on CPU machines)."""
    reason = (
        "faiss has no GPU support (faiss-cpu)" if not has_gpu_build else "no GPU visible to faiss"
    )
    missing = (
        f"device: gpu, but {reason}: install the `gpu` extra (faiss-gpu) on a machine "
        "with an NVIDIA GPU, or set device: auto"
    )
    if wants_gpu(setting, n_gpus, missing=missing):
        return DeviceChoice(True, f"{n_gpus} GPU(s) visible to faiss")
    return DeviceChoice(False, "device: cpu" if n_gpus > 0 else reason)


def select_device(setting: str, faiss: ModuleType) -> DeviceChoice:
    choice = choose_device(setting, gpu_count(faiss), hasattr(faiss, "StandardGpuResources"))
    log.info("vector index on %s (%s)", "GPU" if choice.use_gpu else "CPU", choice.reason)
    return choice


class GpuClone:
    """A GPU copy of a CPU index, for unfiltered searches.

    GPU indexes are not thread-safe, even for search: callers hold the owning
    :class:`~hear_features.index.VectorIndex` lock. Filtered searches stay on the CPU
    copy, whose ID selectors are exact.
    """

    def __init__(self, faiss: ModuleType, cpu_index: Any, fp16: bool) -> None:
        self._resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = fp16
        self.index = faiss.index_cpu_to_gpu(self._resources, 0, cpu_index, options)
