"""Feast imported without typeguard's instrumentation in hear-features processes only.

Each case runs in a fresh interpreter, since the hook acts on the first import of Feast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
{first}
from feast import Field
from feast.types import Float32
import typeguard

@typeguard.typechecked
def mine(x: int) -> int:
    return x

try:
    mine("not an int")
    print("own checks: off")
except typeguard.TypeCheckError:
    print("own checks: on")
try:
    Field(name=3, dtype=Float32)
    print("feast checks: off")
except typeguard.TypeCheckError:
    print("feast checks: on")
"""


def probe(script: Path, first: str, **env: str) -> str:
    script.write_text(PROBE.format(first=first))  # a file: typeguard reads the source
    environ = {k: v for k, v in os.environ.items() if k != "HEAR_FEAST_TYPECHECKS"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("first", "env", "feast_checks"),
    [
        ("import hear_features", {}, "off"),
        ("import hear_features", {"HEAR_FEAST_TYPECHECKS": "1"}, "on"),
        ("import feast; import hear_features", {}, "on"),  # as `feast apply` loads the plugins
    ],
)
def test_feast_checks_are_skipped_only_when_hear_features_comes_first(
    first: str, env: dict[str, str], feast_checks: str, tmp_path: Path
) -> None:
    out = probe(tmp_path / "probe.py", first, **env)
    assert f"feast checks: {feast_checks}" in out, out
    assert "own checks: on" in out, out  # typeguard itself is given back untouched
