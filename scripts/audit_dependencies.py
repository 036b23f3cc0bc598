"""Audit the installed dependencies for known vulnerabilities with pip-audit.

    .venv/bin/python scripts/audit_dependencies.py [--require-service]

Runs ``pip-audit`` over this environment (our own editable package is skipped) and
says how many packages were actually checked, not just whether anything was found:
pip-audit reports "no known vulnerabilities" even when its advisory service could not
be reached and nothing was checked. Exit 1 when a vulnerability is found, or, with
``--require-service``, when no package could be checked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def audit() -> dict[str, object]:
    """pip-audit's JSON report for this interpreter's environment."""
    pip_audit = Path(sys.executable).with_name("pip-audit")
    proc = subprocess.run(
        [str(pip_audit), "--skip-editable", "--progress-spinner", "off", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"pip-audit failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--require-service", action="store_true")
    args = parser.parse_args()
    report = audit()
    deps = report.get("dependencies", [])
    assert isinstance(deps, list)
    checked = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in checked if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(
        f"dependency audit: {len(checked)} of {len(deps)} packages checked, "
        f"{len(vulnerable)} with known vulnerabilities"
    )
    if not checked:
        print(
            "warning: the advisory service could not be reached, so nothing was checked "
            "(pip-audit needs https://pypi.org or https://api.osv.dev)"
        )
        return 1 if args.require_service else 0
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
