"""A bounded loopback soak of the HTTP API with a mix of endpoints; prints a table.

    .venv/bin/python bench/soak.py [--seconds 300] [--clients 8] [--workers 2]

A real repository is built first (synthetic coughs, breaths and speech registered,
applied and materialised with the stand-in encoder), then ``hear-features serve`` runs
on 127.0.0.1 with rate limits on, as in production: each client has its own read key
(``RATE_PER_S`` requests/s, burst ``BURST``) and waits as long as a 429's
``Retry-After`` says. Closed-loop clients send a weighted mix of requests: vector
search, clip lookups, neighbours of stored clips, audio search, training sets, health
and metrics. Resident memory of the server (supervisor plus workers) is sampled every
second; growth is measured from the end of the warm-up (the first quarter of the run)
to the end. Then a burst of large uploads (``BURST_UPLOADS`` near the upload limit, all
at once) and the memory after it. Pass: zero errors (a 429 with ``Retry-After`` is the
limiter working, counted apart), memory growth below 10 % during the mixed load, and
below ``MAX_BURST_GROWTH`` after the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow.parquet as pq
import soundfile as sf
from rich.console import Console
from rich.table import Table

from hear_features.encoders import build_standin
from hear_features.synthetic import cough, write_corpus

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH = 0.10
#: Per-key rate limit of the soak's clients, and the bucket size.
RATE_PER_S = 8.0
BURST = 16
#: The burst of large uploads after the mixed load: how many, how large, and how much the
#: server's memory may have grown once they are answered (allocators keep some).
BURST_UPLOADS = 8
BURST_UPLOAD_MB = 8.0
MAX_BURST_GROWTH = 0.25

sys.path.insert(0, str(ROOT))  # the tests' support code
from tests.support.launch import launch, stop  # noqa: E402


@dataclass
class SoakResult:
    seconds: float
    clients: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)
    rate_limited: int = 0  # 429 answers, each with Retry-After
    burst: dict[str, float] = field(default_factory=dict)  # the large-upload burst

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def memory(self) -> tuple[float, float, float]:
        """(MiB after warm-up, MiB at the end, growth as a fraction)."""
        warm = self.seconds / 4
        after = [m for t, m in self.rss_mib if t >= warm]
        baseline, final = after[0], float(np.median([m for _, m in self.rss_mib[-3:]]))
        return baseline, final, (final - baseline) / baseline

    def p99(self) -> float:
        return float(np.percentile([x for v in self.latencies.values() for x in v], 99))

    def burst_growth(self) -> float:
        return (self.burst["after_mib"] - self.burst["before_mib"]) / self.burst["before_mib"]

    def ok(self) -> bool:
        return (
            self.total_errors == 0
            and self.memory()[2] < MAX_GROWTH
            and (not self.burst or self.burst_growth() < MAX_BURST_GROWTH)
        )


def build_repo(folder: Path) -> tuple[Path, list[str]]:
    """An applied, materialised repository of synthetic recordings; returns it and its clips."""
    model = build_standin(folder / "standin", seed=0)
    write_corpus(folder / "audio", subjects=3, per_label=3, seed=21)
    repo = folder / "repo"
    repo.mkdir()
    (repo / "definitions.py").write_text((ROOT / "feature_repo" / "definitions.py").read_text())
    text = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(text.replace("model: google/hear", f"model: {model}"))
    env_python = Path(sys.executable)
    steps = [
        [
            str(env_python),
            "-m",
            "hear_features",
            "register",
            str(folder / "audio" / "manifest.csv"),
            "--repo",
            str(repo),
        ],
        [str(env_python.with_name("feast")), "apply"],
        [str(env_python.with_name("feast")), "materialize-incremental", "2100-01-01T00:00:00"],
    ]
    for cmd in steps:
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True)
    clips = pq.read_table(repo / "data" / "embeddings.parquet", columns=["clip_id"])
    return repo, clips["clip_id"].to_pylist()


Request = Callable[[httpx.AsyncClient], "asyncio.Future[httpx.Response]"]


def request_mix(
    clips: list[str], rng: random.Random
) -> list[tuple[str, int, Callable[..., object]]]:
    """(endpoint, weight, send) triples; ``send(client)`` returns a coroutine."""
    buf = io.BytesIO()
    sf.write(buf, cough(np.random.default_rng(4), 16_000, subject=1), 16_000, format="WAV")
    wav = buf.getvalue()
    vectors = np.random.default_rng(5).standard_normal((64, 512)).astype(np.float32).tolist()

    def vector(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.post("/v1/search/vector", json={"vector": rng.choice(vectors), "k": 10})

    def filtered(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        body = {"vector": rng.choice(vectors), "k": 5, "filters": {"label": "cough"}}
        return c.post("/v1/search/vector", json=body)

    def clip(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.get(f"/v1/clips/{rng.choice(clips)}")

    def similar(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.get(f"/v1/clips/{rng.choice(clips)}/similar", params={"k": 5})

    def audio(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.post(
            "/v1/search/audio", files={"file": ("q.wav", wav, "audio/wav")}, data={"k": "5"}
        )

    def training(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        rows = [{"clip_id": rng.choice(clips), "event_timestamp": "2100-01-01T00:00:00Z"}]
        return c.post("/v1/training-set", json={"entities": rows})

    def health(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.get("/readyz")

    def metrics(c: httpx.AsyncClient):  # type: ignore[no-untyped-def]
        return c.get("/metrics")

    return [
        ("POST /v1/search/vector", 35, vector),
        ("POST /v1/search/vector (filtered)", 10, filtered),
        ("GET /v1/clips/{id}", 15, clip),
        ("GET /v1/clips/{id}/similar", 15, similar),
        ("POST /v1/search/audio", 10, audio),
        ("POST /v1/training-set", 5, training),
        ("GET /readyz", 5, health),
        ("GET /metrics", 5, metrics),
    ]


def server_rss_mib(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def client_keys(clients: int) -> list[str]:
    return [f"soak-client-{i:02d}-{'k' * 20}" for i in range(clients)]


def keys_file(folder: Path, keys: list[str]) -> Path:
    """A key file with one read key per client, each with the soak's rate limit."""
    path = folder / "soak-keys.toml"
    path.write_text(
        "".join(
            f'[[keys]]\nname = "client-{i}"\nkey = "{key}"\n'
            f"rate_per_s = {RATE_PER_S}\nburst = {BURST}\n\n"
            for i, key in enumerate(keys)
        )
    )
    return path


def large_upload(megabytes: float) -> bytes:
    """A WAV of about ``megabytes`` (48 kHz stereo 16-bit noise, under the upload limit)."""
    frames = int(megabytes * 2**20 / 4) - 64
    rng = np.random.default_rng(11)
    buf = io.BytesIO()
    sf.write(buf, 0.1 * rng.standard_normal((frames, 2)), 48_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def upload_burst(url: str, key: str, server: psutil.Process) -> dict[str, float]:
    """``BURST_UPLOADS`` large uploads at once; the server's memory before, at its peak,
    and once they are all answered (after a short settle)."""
    data = large_upload(BURST_UPLOAD_MB)
    before = server_rss_mib(server)
    peak = before
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        files = {"file": ("large.wav", data, "audio/wav")}
        reply = await client.post("/v1/search/audio", files=files, data={"k": "5"})
        statuses.append(reply.status_code)

    async def watch(done: asyncio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server_rss_mib(server))
            await asyncio.sleep(0.2)

    done = asyncio.Event()
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as client:
        watcher = asyncio.create_task(watch(done))
        start = time.monotonic()
        await asyncio.gather(*(one(client) for _ in range(BURST_UPLOADS)))
        took = time.monotonic() - start
        done.set()
        await watcher
    await asyncio.sleep(3)
    return {
        "uploads": BURST_UPLOADS,
        "upload_mb": round(len(data) / 2**20, 2),
        "ok_uploads": sum(s == 200 for s in statuses),
        "seconds": round(took, 1),
        "before_mib": round(before, 1),
        "peak_mib": round(peak, 1),
        "after_mib": round(server_rss_mib(server), 1),
    }


async def drive(
    url: str,
    pid: int,
    clips: list[str],
    seconds: float,
    clients: int,
    seed: int,
    keys: list[str] | None = None,
) -> SoakResult:
    result = SoakResult(seconds, clients)
    rng = random.Random(seed)
    mix = request_mix(clips, rng)
    names = [name for name, _, _ in mix]
    weights = [w for _, w, _ in mix]
    senders = {name: send for name, _, send in mix}
    server = psutil.Process(pid)
    start = time.monotonic()
    deadline = start + seconds

    async def client_loop(key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
            while time.monotonic() < deadline:
                name = rng.choices(names, weights)[0]
                t0 = time.perf_counter()
                try:
                    response = await senders[name](client)  # type: ignore[misc]
                    if response.status_code == 429 and "retry-after" in response.headers:
                        result.rate_limited += 1  # the limiter at work: wait as told
                        await asyncio.sleep(float(response.headers["retry-after"]))
                        continue
                    failed = response.status_code != 200
                    detail = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failed, detail = True, repr(exc)
                result.latencies[name].append((time.perf_counter() - t0) * 1000)
                if failed:
                    result.errors[name] += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{name}: {detail}")

    async def sample_memory() -> None:
        while time.monotonic() < deadline:
            result.rss_mib.append((time.monotonic() - start, server_rss_mib(server)))
            await asyncio.sleep(1.0)
        result.rss_mib.append((time.monotonic() - start, server_rss_mib(server)))

    per_client: list[str | None] = list(keys) if keys else [None] * clients
    await asyncio.gather(sample_memory(), *(client_loop(k) for k in per_client))
    if keys:
        result.burst = await upload_burst(url, keys[0], server)
    return result


def soak(
    repo: Path, clips: list[str], seconds: float, clients: int, workers: int, seed: int = 0
) -> SoakResult:
    """Serve ``repo`` with rate limits on and run the mixed load, then the upload burst,
    against it; the server is stopped after."""
    keys = client_keys(clients)
    env = {
        "HEAR_API_KEYS_FILE": str(keys_file(repo.parent, keys)),
        "HEAR_API_RATE_PER_S": str(RATE_PER_S),
    }
    process, url = launch(repo, "--workers", str(workers), env=env, timeout_s=300)
    try:
        return asyncio.run(drive(url, process.pid, clips, seconds, clients, seed, keys))
    finally:
        stop(process)


def table(result: SoakResult) -> Table:
    t = Table(title=f"soak: {result.seconds:.0f} s, {result.clients} clients, loopback")
    for col in ("endpoint", "requests", "errors", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col == "endpoint" else "right")
    for name, lat in sorted(result.latencies.items()):
        t.add_row(
            name,
            str(len(lat)),
            str(result.errors.get(name, 0)),
            f"{np.percentile(lat, 50):.1f}",
            f"{np.percentile(lat, 99):.1f}",
        )
    t.add_row("all", str(result.requests), str(result.total_errors), "", f"{result.p99():.1f}")
    return t


def summary(result: SoakResult) -> dict[str, object]:
    baseline, final, growth = result.memory()
    return {
        "seconds": result.seconds,
        "clients": result.clients,
        "requests": result.requests,
        "errors": result.total_errors,
        "p99_ms": round(result.p99(), 1),
        "rss_after_warmup_mib": round(baseline, 1),
        "rss_end_mib": round(final, 1),
        "rss_growth_pct": round(100 * growth, 2),
        "rate_limited": result.rate_limited,
        **{f"burst_{name}": value for name, value in result.burst.items()},
        "burst_growth_pct": round(100 * result.burst_growth(), 2) if result.burst else None,
        "ok": result.ok(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="hear-soak-") as tmp:
        repo, clips = build_repo(Path(tmp))
        console.print(f"repository with {len(clips)} clips; soaking for {args.seconds:.0f} s")
        result = soak(repo, clips, args.seconds, args.clients, args.workers)
    console.print(table(result))
    info = summary(result)
    console.print(
        f"server RSS {info['rss_after_warmup_mib']} MiB after warm-up -> {info['rss_end_mib']} MiB "
        f"at the end ({info['rss_growth_pct']:+.2f} %, limit +{100 * MAX_GROWTH:.0f} %); "
        f"errors {info['errors']}, rate-limited (429) {info['rate_limited']}: "
        f"{'PASS' if info['ok'] else 'FAIL'}"
    )
    burst = result.burst
    console.print(
        f"burst of {burst['uploads']} uploads of {burst['upload_mb']} MiB at once "
        f"({burst['ok_uploads']} answered 200 in {burst['seconds']} s): server RSS "
        f"{burst['before_mib']} MiB before, {burst['peak_mib']} MiB at the peak, "
        f"{burst['after_mib']} MiB after ({info['burst_growth_pct']:+.2f} %, limit "
        f"+{100 * MAX_BURST_GROWTH:.0f} %)"
    )
    for sample in result.error_samples:
        console.print(f"  {sample}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    sys.exit(0 if info["ok"] else 1)


if __name__ == "__main__":
    main()
