"""OpenMP settings that must be in place before the OpenMP runtime starts.

FAISS (and OpenBLAS inside it) run on GNU OpenMP, which reads ``OMP_WAIT_POLICY`` once,
when the library loads, i.e. at the first ``import faiss``. Left unset, its idle
threads spin for a while after each parallel region, on the cores the next query
needs; on a machine whose cores are busy that made single-query searches several
times slower at the 99th percentile (BENCHMARKS.md, "Search under load"). ``PASSIVE``
puts them to sleep at once.

:func:`prefer_passive_openmp` runs when ``hear_features`` is imported, which every entry
point (the CLI, the API workers, the Feast plugins that ``feast apply``, ``feast
materialize`` and ``feast serve`` load) does before FAISS. A value the user set wins.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_openmp() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (child processes inherit it)."""
    if WAIT_POLICY in os.environ:
        return
    os.environ[WAIT_POLICY] = "PASSIVE"
    if "faiss" in sys.modules:  # too late for this process: its runtime has started
        log.debug(
            "faiss was imported before hear_features; %s applies to child processes only",
            WAIT_POLICY,
        )
