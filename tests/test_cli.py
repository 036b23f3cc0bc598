"""The command line starts without its heavy dependencies: ``--help`` imports none of them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "pyarrow", "pandas", "feast", "tensorflow", "faiss", "fastapi", "httpx")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from hear_features.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for command in ('register', 'embed', 'serve', 'demo', 'more-like', 'training-set'):\n"
        "    assert command in result.output, command\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
