"""The README's own examples, read for the tests that run them as written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

#: curl that fails on any non-2xx answer and prints each body on its own line.
STRICT_CURL = 'set -e\ncurl() { command curl -sS --fail-with-body "$@"; echo; }\n'


def block_after(marker: str, language: str, *, containing: str = "") -> str:
    """The first ``language`` code block after the first ``marker`` in the README that
    contains ``containing``."""
    rest = README.read_text()
    rest = rest[rest.index(marker) :]
    fence = f"```{language}\n"
    for chunk in rest.split(fence)[1:]:
        code = chunk.split("\n```", 1)[0]
        if containing in code:
            return code
    raise AssertionError(f"no {language} block with {containing!r} after {marker!r}")


def run_curl_lines(
    script: str, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``script`` under bash with :data:`STRICT_CURL`, ``env`` added to this environment."""
    return subprocess.run(
        ["bash", "-c", STRICT_CURL + script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
