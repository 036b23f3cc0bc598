"""Start-up: the CLI's help, a one-shot ``more-like`` by clip id, and time to ready.

    .venv/bin/python bench/startup.py [--size 100000] [--runs 5] [--repo DIR]

A copy of ``feature_repo/`` (the product's views) is applied with the real ``feast
apply`` and filled with N synthetic clips, online (index and rows) and offline (the
embeddings table that training rows are read from). Each command runs once to warm the
page cache and Python's bytecode caches (a user's installation has them), then ``--runs``
times; wall seconds per run, as a user waits for them:

* ``hear-features --help``;
* ``hear-features more-like ID -k 10`` (one-shot: open the repo, search, read the
  neighbours' training rows, write a Parquet file);
* ``python -c "import hear_features, feast.feature_store"``: the part of every command
  that touches the store which is Feast's (and pandas', pyarrow's) import, for scale;
* ``hear-features serve`` (1 worker) and ``feast serve`` (1 worker) on the same repo:
  seconds from the command to the first ready answer (``/readyz``, ``/health``).
"""

from __future__ import annotations

# isort: off
import hear_features  # noqa: F401  (before Feast: see hear_features.typechecks)

# isort: on
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support code
from tests.support import shipped_repo
from tests.support.launch import free_port, launch, stop, wait_ready

console = Console(width=max(Console().width, 130))
BIN = Path(sys.executable).parent
#: The children write bytecode caches, as a user's installation has them.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(command: list[str], cwd: Path | None = None) -> float:
    """Seconds one run of ``command`` takes (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def times(command: list[str], runs: int) -> list[float]:
    wall(command)  # warm caches
    return [wall(command) for _ in range(runs)]


def hear_ready(repo: Path) -> float:
    start = time.perf_counter()
    proc, _ = launch(repo, "--workers", "1", timeout_s=600)
    took = time.perf_counter() - start
    stop(proc)
    return took


def feast_ready(repo: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, 600, path="/health")
        return time.perf_counter() - start
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo", type=Path, help="reuse (or create) this repo folder")
    args = parser.parse_args()
    console.print(
        f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or Path(tmp) / "repo"
        if not (repo / "feature_store.yaml").exists():
            start = time.perf_counter()
            shipped_repo.make_repo(repo, "standin")
            shipped_repo.fill(repo, args.size, offline=True)
            took = time.perf_counter() - start
            console.print(f"shipped repo with {args.size:,} clips in {took:.0f} s")
        seed = shipped_repo.clip_id(args.size // 2)
        out = Path(tmp) / "more_like.parquet"
        hf = str(BIN / "hear-features")
        rows: list[tuple[str, list[float], float | str]] = [
            ("hear-features --help", times([hf, "--help"], args.runs), 1.0),
            (
                f"hear-features more-like ID -k 10 ({args.size:,} clips)",
                times(
                    [hf, "more-like", seed, "-k", "10", "--repo", str(repo), "-o", str(out)],
                    args.runs,
                ),
                3.0,
            ),
            (
                'python -c "import hear_features, feast.feature_store"',
                times(
                    [sys.executable, "-c", "import hear_features, feast.feature_store"], args.runs
                ),
                "for scale",
            ),
            (
                "hear-features serve, 1 worker: start to /readyz",
                [hear_ready(repo) for _ in range(min(args.runs, 3))],
                "recorded (no target)",
            ),
            (
                "feast serve, 1 worker: start to /health",
                [feast_ready(repo) for _ in range(min(args.runs, 3))],
                "for scale",
            ),
        ]
    table = Table(title="start-up, wall seconds")
    for col in ("command", "runs", "median", "min", "max", "target (median)"):
        table.add_column(col, justify="left" if col in ("command", "target (median)") else "right")
    for name, values, target in rows:
        median = statistics.median(values)
        if isinstance(target, str):
            verdict = target
        else:
            verdict = f"<= {target:g} s: " + ("met" if median <= target else "NOT met")
        table.add_row(
            name,
            str(len(values)),
            f"{median:.2f}",
            f"{min(values):.2f}",
            f"{max(values):.2f}",
            verdict,
        )
    console.print(table)


if __name__ == "__main__":
    main()
