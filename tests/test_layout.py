"""The shape of the code: every module imports, none grows past a size a reader can hold,
and the API keeps to Feast's public surface."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import hear_features

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hear_features", "index", "api")


def _modules() -> list[str]:
    found = pkgutil.walk_packages(hear_features.__path__, "hear_features.")
    return sorted(m.name for m in found if m.name != "hear_features.__main__")  # runs the CLI


@pytest.mark.parametrize("name", _modules())
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_no_module_is_over_400_lines_and_the_engine_holds_hooks_only() -> None:
    sizes = {
        path.relative_to(ROOT): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {p: n for p, n in sizes.items() if n > 400}
    assert sizes[Path("hear_features/featurestore/engine.py")] <= 250


def test_the_api_calls_no_private_feast_method() -> None:
    for path in (ROOT / "api").rglob("*.py"):
        assert "._get_provider(" not in path.read_text(), path


def test_every_package_is_in_the_distribution() -> None:
    """pyproject.toml lists packages one by one: a new folder left out would be missing
    from a wheel (the editable install of the tests would not notice)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        m.name for m in pkgutil.walk_packages(hear_features.__path__, "hear_features.") if m.ispkg
    }
    assert found | {"hear_features"} <= listed
