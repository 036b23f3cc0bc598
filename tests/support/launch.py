"""Starting ``hear-features serve`` in a child process and waiting until it is ready.

For the benchmarks and the tests: each needs a real uvicorn process on 127.0.0.1 that
it starts and stops itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx


class ServerStartError(RuntimeError):
    """The child server exited or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    repo: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``hear-features serve --repo REPO`` on a free port; return it and its URL.

    ``env`` replaces the variables it names; ``HEAR_MODEL``, the keys and the other
    ``HEAR_API_*`` settings are not inherited unless given, so the repository's own
    configuration applies. Per-key rate limits are off unless ``env`` sets
    ``HEAR_API_RATE_PER_S``: a test or benchmark that sends requests as fast as it can
    would otherwise measure the limiter. ``cwd``: where the child starts (``python -m``
    imports from there first: bench/api_compare.py serves another revision's package).
    """
    port = free_port()
    child_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HEAR_MODEL", "HEAR_API_KEY", "HEAR_ADMIN_API_KEY")
        and not k.startswith("HEAR_API_")
    }
    child_env["HEAR_API_RATE_PER_S"] = "0"
    child_env.update(env or {})
    # The server's stderr goes to a file, never to a pipe: nobody reads a pipe while the
    # server runs, and once its 64 KiB fill up, the worker writing a log line blocks.
    log = tempfile.TemporaryFile(mode="w+", prefix="hear-serve-")  # noqa: SIM115 (outlives us)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hear_features",
            "serve",
            "--repo",
            str(repo),
            "--port",
            str(port),
            *args,
        ],
        env=child_env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, timeout_s, log)
    except ServerStartError:
        stop(process)
        raise
    return process, url


def wait_ready(
    url: str,
    process: subprocess.Popen[str],
    timeout_s: float,
    log: IO[str] | None = None,
    path: str = "/readyz",
) -> None:
    """Poll ``path`` until it answers 200, the process exits, or time runs out.

    ``log``: the file the server's stderr goes to, quoted when it exits early."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            err = ""
            if log is not None:
                log.seek(0)
                err = log.read()
            elif process.stderr is not None:
                err = process.stderr.read()
            raise ServerStartError(
                f"the server exited with code {process.returncode}: {err[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(f"the server at {url} was not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def stop(process: subprocess.Popen[str]) -> None:
    """Terminate the server, and kill it if it does not stop within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
