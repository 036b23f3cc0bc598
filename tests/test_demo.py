"""``hear-features demo`` (what ``make demo`` runs) end to end, as a newcomer sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hear_features.probe.metrics import Estimate
from tests.conftest import hear_cli
from tests.support.readme import block_after

pytestmark = pytest.mark.slow


def test_the_demo_runs_every_step_and_prints_what_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "demo-output"
    proc = hear_cli(
        "demo",
        "--workdir",
        str(workdir),
        "--model",
        "standin",
        "--subjects",
        "3",
        "--per-label",
        "2",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    for step in range(1, 12):
        assert f"{step}. " in out, f"step {step} missing:\n{out}"
    assert "registered 30 clips from 18 recordings (0 problems)" in out
    assert "recordings most like s0_cough_0.wav" in out
    # The probe's table: the embedding row and the chance baseline, and a written report.
    assert "embedding" in out and "chance" in out
    assert (workdir / "probe" / "report.md").is_file()

    # The README's probe example ("From Python"), as written, on the demo's store.
    code = block_after("From Python:\n\n```python", "python")
    monkeypatch.chdir(workdir)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    auroc = scope["report"].estimate("embedding", "auroc")  # type: ignore[attr-defined]
    assert isinstance(auroc, Estimate) and 0.5 <= auroc.mean <= 1.0
    assert (workdir / "probe-report" / "report.md").is_file()
