"""A bounded loopback soak of the HTTP API with a mix of endpoints; prints a table.

    .venv/bin/python bench/soak.py [--seconds 300] [--clients 8] [--workers 2]

A real repository is built first (synthetic coughs, breaths and speech registered,
applied and materialised with the stand-in encoder), then ``hear-features serve`` runs
on 127.0.0.1 and closed-loop clients send a weighted mix of requests: vector search,
clip lookups, neighbours of stored clips, audio search, training sets, health and
metrics. Resident memory of the server (supervisor plus workers) is sampled every
second; growth is measured from the end of the warm-up (the first quarter of the run)
to the end. Pass: zero errors and memory growth below 10 %.
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
from hear_features.api.launch import launch, stop
from rich.console import Console
from rich.table import Table

from hear_features.encoders import build_standin
from hear_features.synthetic import cough, write_corpus

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH = 0.10


@dataclass
class SoakResult:
    seconds: float
    clients: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)

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

    def ok(self) -> bool:
        return self.total_errors == 0 and self.memory()[2] < MAX_GROWTH


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


async def drive(
    url: str, pid: int, clips: list[str], seconds: float, clients: int, seed: int
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

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.monotonic() < deadline:
                name = rng.choices(names, weights)[0]
                t0 = time.perf_counter()
                try:
                    response = await senders[name](client)  # type: ignore[misc]
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

    await asyncio.gather(sample_memory(), *(client_loop() for _ in range(clients)))
    return result


def soak(
    repo: Path, clips: list[str], seconds: float, clients: int, workers: int, seed: int = 0
) -> SoakResult:
    """Serve ``repo`` and run the mixed load against it; the server is stopped after."""
    process, url = launch(repo, "--workers", str(workers), timeout_s=300)
    try:
        return asyncio.run(drive(url, process.pid, clips, seconds, clients, seed))
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
        f"errors {info['errors']}: {'PASS' if info['ok'] else 'FAIL'}"
    )
    for sample in result.error_samples:
        console.print(f"  {sample}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    sys.exit(0 if info["ok"] else 1)


if __name__ == "__main__":
    main()
