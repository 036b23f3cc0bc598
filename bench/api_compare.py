"""Compare the HTTP API of another revision with this working tree, side by side.

    .venv/bin/python bench/api_compare.py --baseline REV [--vectors 100000]
        [--concurrency 16] [--requests 10000] [--rounds 6]

The machines this project is measured on are shared, and the same code measured twice
an hour apart differed by half (BENCHMARKS.md). So both servers run at once, on one copy
of the shipped ``feature_repo/`` filled with the same synthetic vectors, and the client
of ``bench/api.py`` loads them in turn, round after round (``baseline, this, this,
baseline, ...``): a slow spell of the machine falls on both. The baseline revision is
checked out into a temporary git worktree and served from there with this environment's
packages; each server's CPU per request is its workers' user + system time.

Prints every round, the medians, and this tree's medians over the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from hear_features.encoders import build_standin
from tests.support import shipped_repo
from tests.support.launch import launch, stop
from tests.support.vectors import clustered_vectors


def _bench_api():  # type: ignore[no-untyped-def]
    """bench/api.py (its client and request encoding), by path: ``api`` is the package."""
    spec = importlib.util.spec_from_file_location("bench_api", Path(__file__).with_name("api.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_api = _bench_api()
JSON, http_post, load = bench_api.JSON, bench_api.http_post, bench_api.load

ROOT = Path(__file__).resolve().parents[1]
#: The installed package maps these folders of the repository into ``hear_features``
#: (pyproject.toml, ``package-dir``); a plain checkout needs them linked there.
MAPPED = {"api": "api", "index": "index"}


def checkout(rev: str, target: Path) -> Path:
    """``rev`` in a new git worktree at ``target``, importable as ``hear_features`` with
    ``target`` first on ``PYTHONPATH``."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(target), rev], cwd=ROOT, check=True
    )
    for name, folder in MAPPED.items():
        link = target / "hear_features" / name
        if not link.exists():
            link.symlink_to(target / folder, target_is_directory=True)
    return target


def cpu_s(process: psutil.Process) -> float:
    """User + system seconds of a server's workers (and of the server itself)."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10_000, help="per round and server")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    queries = clustered_vectors(64, 512, seed=7)
    bodies = [
        http_post("/v1/search/vector", json.dumps({"vector": q.tolist(), "k": 10}).encode(), JSON)
        for q in queries
    ]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        baseline = checkout(args.baseline, base / "baseline")
        servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
        try:
            repo = shipped_repo.make_repo(base / "repo", build_standin(base / "standin"))
            shipped_repo.fill(repo, args.vectors)
            # Started from an empty folder: `python -m` imports from its folder first.
            for name, env in ((args.baseline, {"PYTHONPATH": str(baseline)}), ("this tree", {})):
                servers[name] = launch(
                    repo, "--workers", str(args.workers), env=env, timeout_s=600, cwd=base
                )
            rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in servers}
            for r in range(args.rounds):
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in order:
                    proc, url = servers[name]
                    asyncio.run(load(url, args.concurrency, 300, 20, bodies))  # warm
                    server = psutil.Process(proc.pid)
                    before = cpu_s(server)
                    result = asyncio.run(load(url, args.concurrency, args.requests, 60, bodies))
                    cpu_ms = (cpu_s(server) - before) / result["requests"] * 1000
                    rows[name].append(
                        (result["qps"], result["p50"], result["p99"], cpu_ms, result["errors"])
                    )
                    print(
                        f"round {r}  {name:>12}  QPS {result['qps']:6.0f}"
                        f"  p50 {result['p50']:5.1f} ms  p99 {result['p99']:5.1f} ms"
                        f"  CPU/request {cpu_ms:.3f} ms"
                        f"  errors {result['errors']}  reconnects {result['reconnects']}",
                        flush=True,
                    )
                    time.sleep(1)
        finally:
            for proc, _ in servers.values():
                stop(proc)
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False
            )
    medians = {
        name: [statistics.median(column) for column in zip(*values, strict=True)]
        for name, values in rows.items()
    }
    print(
        f"\n{args.vectors:,} vectors, {args.concurrency} clients, {args.workers} workers, "
        f"medians of {args.rounds} rounds of {args.requests} requests:"
    )
    for name, (qps, p50, p99, cpu_ms, _) in medians.items():
        errors = sum(int(row[4]) for row in rows[name])
        print(
            f"  {name:>12}: QPS {qps:,.0f}  p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
            f"CPU/request {cpu_ms:.3f} ms  errors {errors}"
        )
    (b_qps, b_p50, b_p99, b_cpu, _), (a_qps, a_p50, a_p99, a_cpu, _) = medians.values()
    print(
        f"  this tree / {args.baseline}: QPS x{a_qps / b_qps:.2f}, p50 x{a_p50 / b_p50:.2f}, "
        f"p99 x{a_p99 / b_p99:.2f}, CPU/request x{a_cpu / b_cpu:.2f}"
    )


if __name__ == "__main__":
    main()
