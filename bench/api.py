"""Benchmark the HTTP API on loopback; prints a table.

The server runs ``--workers`` uvicorn processes (default: one per core); the load comes
from one asyncio process with a minimal HTTP client, on the same machine.

    .venv/bin/python bench/api.py [--sizes 100000,1000000] [--requests 600] [--seconds 30]

For each collection size, a copy of feature_repo/ is filled with N synthetic 512-d
vectors (written straight into HearOnlineStore), ``hear-features serve`` starts on
127.0.0.1, and closed-loop clients at concurrency 1, 16 and 64 send
``POST /v1/search/vector`` (k = 10); ``POST /v1/search/audio`` (a 2 s WAV, the stand-in
encoder) runs at the same concurrencies on the first size only. Each cell is bounded by
a request count and a time limit. Targets on 2 cores: vector search p99 <= 15 ms at 16
concurrent clients on 100k vectors, with zero errors, and >= 3x the QPS of ``feast
serve`` at a lower p99.

Beside it, in the same run and with the same client, concurrencies and queries
(``--feast-serve``, on by default): Feast's own feature server (``feast serve`` with the
same number of workers, ``POST /search`` with ``api_version: 2``, asking for the same
features the API's hits carry) on the same repo and vectors. Its workers are not
recycled (``--max-requests`` raised): a recycled worker would reload the index.
The time from starting each server to its first ready answer is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

from hear_features.cli.walkthrough import multipart
from hear_features.encoders import build_standin
from hear_features.featurestore.repo import open_store
from hear_features.synthetic import cough

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support import shipped_repo
from tests.support.launch import free_port, launch, stop, wait_ready
from tests.support.vectors import clustered_vectors

console = Console()
ROOT = Path(__file__).resolve().parents[1]
VIEW = "cough_embeddings"
JSON = "application/json"


def serve(repo: Path, workers: int) -> tuple[subprocess.Popen[str], str, float]:
    """``hear-features serve``; its URL and seconds from start to ready."""
    start = time.perf_counter()
    proc, url = launch(repo, "--workers", str(workers), timeout_s=600)
    return proc, url, time.perf_counter() - start


def feast_serve(repo: Path, workers: int) -> tuple[subprocess.Popen[str], str, float]:
    """Feast's own feature server on the same repo; its URL and seconds to ready."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("feast")),
            "serve",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--max-requests",
            "100000000",
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 600, path="/health")
    except Exception:
        stop(proc)
        raise
    return proc, url, time.perf_counter() - start


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on one socket.

    The load generator shares the machine's two cores with the server; httpx spends
    about 2 ms of CPU per request here, more than the server, so it would measure
    mostly itself. This client sends pre-encoded requests and reads the replies by
    Content-Length, for a few tens of microseconds each. It honours ``Connection:
    close`` as every HTTP/1.1 client does: the next request opens a new connection,
    inside that request's time.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
        await self.reader.readexactly(length)
        if close:  # the server asked for a new connection (hear-features: api.balance)
            self.reconnects += 1
            await self.close()
            self.reader = self.writer = None
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_post(path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def load(
    url: str, concurrency: int, requests: int, seconds: float, bodies: list[bytes]
) -> dict:
    """Closed loop: ``concurrency`` connections, each sending its next request on reply."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    sent = 0
    reconnects = 0
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal errors, sent, reconnects
        client = RawClient(host, int(port))
        try:
            while sent < requests and time.monotonic() < deadline:
                raw = bodies[sent % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    ok = await client.request(raw) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    reconnects += client.reconnects
                    await client.close()
                    client = RawClient(host, int(port))
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok
        finally:
            reconnects += client.reconnects
            await client.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
        "reconnects": reconnects,
        "qps": len(latencies) / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=600, help="per cell")
    parser.add_argument("--seconds", type=float, default=30, help="time limit per cell")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers")
    parser.add_argument(
        "--feast-serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure `feast serve` on the same repo (default: on)",
    )
    parser.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure POST /v1/search/audio on the first size (default: on)",
    )
    args = parser.parse_args()
    console.print(
        f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; server: {args.workers} uvicorn "
        "worker(s) on 127.0.0.1; client: raw keep-alive sockets in one asyncio process"
    )
    rng = np.random.default_rng(0)
    queries = clustered_vectors(64, 512, seed=7)
    vector_requests = [
        http_post(
            "/v1/search/vector",
            json.dumps({"vector": q.tolist(), "k": 10}).encode(),
            JSON,
        )
        for q in queries
    ]
    audio = io.BytesIO()
    sf.write(
        audio, cough(rng, 16_000, subject=1, seconds=2.0).astype(np.float32), 16_000, format="WAV"
    )
    body, content_type = multipart("file", "q.wav", audio.getvalue(), {"k": "10"})
    audio_requests = [http_post("/v1/search/audio", body, content_type)]
    table = Table(
        title=f"HTTP API on loopback, k = 10, <= {args.requests} requests / {args.seconds:.0f} s per cell"
    )
    for col in (
        "endpoint",
        "vectors",
        "clients",
        "requests",
        "errors",
        "reconnects",
        "QPS",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col, justify="left" if col == "endpoint" else "right")

    def row(endpoint: str, n: int, c: int, r: dict) -> None:
        table.add_row(
            endpoint,
            f"{n:,}",
            str(c),
            str(r["requests"]),
            str(r["errors"]),
            str(r["reconnects"]),
            f"{r['qps']:,.0f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
        )

    concurrencies = [int(x) for x in args.concurrency.split(",")]
    ratios: list[tuple[int, int, dict, dict]] = []
    ready: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_standin(Path(tmp) / "standin")
        for i, n in enumerate(int(s) for s in args.sizes.split(",")):
            repo = shipped_repo.make_repo(Path(tmp) / f"repo{n}", model)
            started = time.perf_counter()
            shipped_repo.fill(repo, n)
            console.print(f"{n:,} vectors written in {time.perf_counter() - started:.0f} s")
            ours: dict[int, dict] = {}
            proc, url, took = serve(repo, args.workers)
            ready.append(f"hear-features serve, {n:,} vectors: ready in {took:.1f} s")
            try:
                asyncio.run(
                    load(url, max(concurrencies), 200, 20, vector_requests)
                )  # warm every worker
                for c in concurrencies:
                    ours[c] = asyncio.run(
                        load(url, c, args.requests, args.seconds, vector_requests)
                    )
                    row("POST /v1/search/vector", n, c, ours[c])
                if i == 0 and args.audio:
                    for c in concurrencies:
                        r = asyncio.run(
                            load(url, c, max(100, args.requests // 3), args.seconds, audio_requests)
                        )
                        row("POST /v1/search/audio (2 s WAV)", n, c, r)
            finally:
                stop(proc)
            if not args.feast_serve:
                continue
            proc, url, took = feast_serve(repo, args.workers)
            ready.append(f"feast serve, {n:,} vectors: ready in {took:.1f} s")
            feast_requests = [http_post("/search", feast_body(repo, q), JSON) for q in queries]
            try:
                asyncio.run(load(url, max(concurrencies), 200, 20, feast_requests))  # warm
                for c in concurrencies:
                    theirs = asyncio.run(load(url, c, args.requests, args.seconds, feast_requests))
                    row("feast serve: POST /search (v2)", n, c, theirs)
                    ratios.append((n, c, ours[c], theirs))
            finally:
                stop(proc)
    console.print(table)
    for line in ready:
        console.print(line)
    for n, c, ours_c, theirs in ratios:
        console.print(
            f"{n:,} vectors, {c} clients: hear-features {ours_c['qps'] / theirs['qps']:.1f}x the QPS "
            f"of feast serve, p99 {ours_c['p99']:.1f} vs {theirs['p99']:.1f} ms"
        )


def feast_body(repo: Path, query: np.ndarray) -> bytes:
    """A ``feast serve`` v2 search for the features the API's hits carry."""
    from hear_features.schema import HIT_FEATURES

    defined = {f.name for f in open_store(repo).get_feature_view(VIEW).features}
    features = [f"{VIEW}:{f}" for f in HIT_FEATURES if f in defined]
    return json.dumps(
        {"features": features, "query": query.tolist(), "top_k": 10, "api_version": 2}
    ).encode()


if __name__ == "__main__":
    main()
