"""A short soak of the real server with the mixed load of bench/soak.py (the benchmark
runs for minutes; this runs for tens of seconds): zero errors, bounded memory growth."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.soak import MAX_BURST_GROWTH, MAX_GROWTH, RATE_PER_S, build_repo, soak, summary
from tests.bad_inputs import write_observation

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("HEAR_SOAK_SECONDS", "20"))


def test_mixed_load_has_no_errors_and_memory_stays_flat(tmp_path: Path) -> None:
    repo, clips = build_repo(tmp_path)
    result = soak(repo, clips, SECONDS, clients=8, workers=2)
    info = summary(result)
    burst = result.burst
    write_observation(
        {
            "case": f"soak, then a burst of {burst['uploads']} uploads of {burst['upload_mb']} MiB",
            "path": "soak",
            "expected": f"every upload answered 200; RSS growth < {100 * MAX_BURST_GROWTH:.0f} % "
            "once they are answered",
            "observed": f"{burst['ok_uploads']} of {burst['uploads']} answered 200 in "
            f"{burst['seconds']} s; RSS {burst['before_mib']} MiB before, {burst['peak_mib']} "
            f"MiB at the peak, {burst['after_mib']} MiB after ({info['burst_growth_pct']:+.2f} %)",
            "stores_unchanged": None,
            "ok": burst["ok_uploads"] == burst["uploads"]
            and result.burst_growth() < MAX_BURST_GROWTH,
        }
    )
    write_observation(
        {
            "case": f"soak: {SECONDS:.0f} s mixed load, 8 clients (own keys, "
            f"{RATE_PER_S:g} requests/s each), 2 workers",
            "path": "soak",
            "expected": f"0 errors, RSS growth < {100 * MAX_GROWTH:.0f} % after warm-up",
            "observed": f"{info['requests']} requests, {info['errors']} errors, "
            f"{info['rate_limited']} rate-limited (429 + Retry-After), p99 "
            f"{info['p99_ms']} ms, RSS {info['rss_after_warmup_mib']} -> {info['rss_end_mib']} MiB "
            f"({info['rss_growth_pct']:+.2f} %)",
            "stores_unchanged": None,
            "ok": info["ok"],
        }
    )
    assert result.total_errors == 0, result.error_samples
    assert len(result.latencies) == 8  # every endpoint of the mix was exercised
    assert result.requests > 100
    assert result.memory()[2] < MAX_GROWTH, result.rss_mib
    assert burst["ok_uploads"] == burst["uploads"], burst
    assert result.burst_growth() < MAX_BURST_GROWTH, burst
