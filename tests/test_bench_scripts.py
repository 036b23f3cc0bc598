"""The GPU benchmark's script, run the way a CPU machine can: its refusal and its dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hear_features.encoders import TINY_SHAPE, build_vit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_gpu.sh"


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=full_env,
        cwd=ROOT,
    )


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_bench_gpu_without_a_gpu_stops_before_installing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = run_script(GPU_VENV=str(venv))
    assert proc.returncode == 2
    assert "no NVIDIA GPU here" in proc.stderr and "--dry-run" in proc.stderr
    assert not venv.exists()


@pytest.mark.slow
def test_bench_gpu_dry_run_measures_every_cpu_part(tmp_path: Path) -> None:
    vit = build_vit(tmp_path / "vit", TINY_SHAPE)
    proc = run_script("--dry-run", DRY_RUN_MODELS=f"standin,{vit}")
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Encoder table: both models, both batch sizes, and the time for 100k / 1M clips.
    for model in ("hear-features/standin@v1-seed0", "vit-random@v1-L2-H64-A4-M128-P16-seed0"):
        rows = [line for line in out.splitlines() if line.startswith("│") and model in line]
        assert len(rows) == 3, out  # batch 1, batch 4, and the projection row
    assert "100,000 clips" in out and "1,000,000 clips" in out
    # Index tables: exact and IVF on the CPU, the GPU rows missing for a stated reason.
    assert re.search(r"exact \(Flat\)\s+.\s+cpu", out) and "IVF512,Flat, nprobe 32" in out
    assert "(no GPU rows)" in out and "faiss-cpu build" in out
    agreement = re.search(r"IVF vs exact, both CPU \(dry run\)\s+.\s+([0-9.]+)", out)
    assert agreement is not None and float(agreement.group(1)) >= 0.9
    assert "bench-gpu: finished" in out
