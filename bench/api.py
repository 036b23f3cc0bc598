"""Benchmark the HTTP API on loopback; prints a table.

The server runs ``--workers`` uvicorn processes (default: one per core); the load comes
from one asyncio process with a minimal HTTP client, on the same machine.

    .venv/bin/python bench/api.py [--sizes 100000,1000000] [--requests 600] [--seconds 30]

For each collection size, a copy of feature_repo/ is filled with N synthetic 512-d
vectors (written straight into HearOnlineStore), ``hear-features serve`` starts on
127.0.0.1, and closed-loop clients at concurrency 1, 16 and 64 send
``POST /v1/search/vector`` (k = 10); ``POST /v1/search/audio`` (a 2 s WAV, the stand-in
encoder) runs at the same concurrencies on the first size only. Each cell is bounded by
a request count and a time limit. Target on 2 cores: vector search p99 <= 25 ms at 16
concurrent clients on 100k vectors, with zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
from hear_features.api.launch import launch, stop
from rich.console import Console
from rich.table import Table

from hear_features.encoders import build_standin
from hear_features.featurestore.repo import open_store
from hear_features.synthetic import clustered_vectors, cough

console = Console()
ROOT = Path(__file__).resolve().parents[1]
LABELS = ("cough", "breath", "speech")


def make_repo(target: Path, model: Path) -> Path:
    target.mkdir(parents=True)
    shutil.copy2(ROOT / "feature_repo" / "definitions.py", target / "definitions.py")
    text = (ROOT / "feature_repo" / "feature_store.yaml").read_text()
    (target / "feature_store.yaml").write_text(
        text.replace("model: google/hear", f"model: {model}")
    )
    subprocess.run(
        [str(Path(sys.executable).with_name("feast")), "apply"],
        cwd=target,
        check=True,
        capture_output=True,
    )
    return target


def fill(repo: Path, n: int) -> None:
    """N synthetic clips with metadata, written the way the batch engine writes them."""
    store = open_store(repo)
    view = store.get_feature_view("cough_embeddings")
    online = store._get_provider().online_store
    data = clustered_vectors(n, 512, seed=n)
    now = dt.datetime.now(dt.UTC)
    for lo in range(0, n, 50_000):
        chunk = data[lo : lo + 50_000]
        ids = range(lo, lo + len(chunk))
        table = pa.table(
            {
                "clip_id": [f"{i:016x}-00000000" for i in ids],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(chunk.reshape(-1)), 512
                ).cast(pa.list_(pa.float32())),
                "model_id": ["hear-features/standin@v1-seed0"] * len(chunk),
                "recording_id": [f"{i:016x}" for i in ids],
                "subject_id": [f"subject-{i % 97}" for i in ids],
                "label": [LABELS[i % 3] for i in ids],
                "dataset": ["bench"] * len(chunk),
                "device": ["synthetic"] * len(chunk),
                "audio_uri": [f"/data/bench/{i}.wav" for i in ids],
                "offset_s": [0.0] * len(chunk),
                "event_timestamp": pa.array([now] * len(chunk), pa.timestamp("us", tz="UTC")),
                "created": pa.array([now] * len(chunk), pa.timestamp("us", tz="UTC")),
            }
        )
        online.write_arrow(store.config, view, table, "clip_id")
    online.checkpoint(store.config, view)


def serve(repo: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    return launch(repo, "--workers", str(workers), timeout_s=600)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on one socket.

    The load generator shares the machine's two cores with the server; httpx spends
    about 2 ms of CPU per request here, more than the server, so it would measure
    mostly itself. This client sends pre-encoded requests and reads the replies by
    Content-Length, for a few tens of microseconds each.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_post(path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def multipart(field: str, filename: str, data: bytes, extra: dict[str, str]) -> tuple[bytes, str]:
    boundary = "hearbenchboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in extra.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def load(
    url: str, concurrency: int, requests: int, seconds: float, bodies: list[bytes]
) -> dict:
    """Closed loop: ``concurrency`` connections, each sending its next request on reply."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal errors, sent
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
                    await client.close()
                    client = RawClient(host, int(port))
                latencies.append((time.perf_counter() - start) * 1000)
                errors += not ok
        finally:
            await client.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "errors": errors,
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
            "application/json",
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
    for col in ("endpoint", "vectors", "clients", "requests", "errors", "QPS", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "endpoint" else "right")

    def row(endpoint: str, n: int, c: int, r: dict) -> None:
        table.add_row(
            endpoint,
            f"{n:,}",
            str(c),
            str(r["requests"]),
            str(r["errors"]),
            f"{r['qps']:,.0f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
        )

    concurrencies = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_standin(Path(tmp) / "standin")
        for i, n in enumerate(int(s) for s in args.sizes.split(",")):
            repo = make_repo(Path(tmp) / f"repo{n}", model)
            started = time.perf_counter()
            fill(repo, n)
            console.print(f"{n:,} vectors written in {time.perf_counter() - started:.0f} s")
            proc, url = serve(repo, args.workers)
            try:
                asyncio.run(
                    load(url, max(concurrencies), 200, 20, vector_requests)
                )  # warm every worker
                for c in concurrencies:
                    row(
                        "POST /v1/search/vector",
                        n,
                        c,
                        asyncio.run(load(url, c, args.requests, args.seconds, vector_requests)),
                    )
                if i == 0:
                    for c in concurrencies:
                        r = asyncio.run(
                            load(url, c, max(100, args.requests // 3), args.seconds, audio_requests)
                        )
                        row("POST /v1/search/audio (2 s WAV)", n, c, r)
            finally:
                stop(proc)
    console.print(table)


if __name__ == "__main__":
    main()
