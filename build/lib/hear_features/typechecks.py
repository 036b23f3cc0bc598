"""Import Feast without typeguard's import-time instrumentation, in this project's processes.

Feast decorates its definition classes (``FeatureView``, ``Field``, ``DataSource``, ...)
with typeguard's ``@typechecked``. typeguard 4 instruments a class when its module is
imported: it reads the module's source again, rewrites the syntax tree and compiles it
once more. Profiled on the 2-core machines here, that is about 7 of the 10 CPU-seconds
of ``import feast`` (BENCHMARKS.md, "Start-up"), the larger part of a one-shot
``hear-features more-like``; the checks then run again inside every
``FeatureView.from_proto``, Feast's per-call registry work.

:func:`import_feast_without_typechecks` installs an import hook, when ``hear_features``
is imported, that runs Feast's package ``__init__`` (which imports its definition
modules) with ``typeguard.typechecked`` replaced by a pass-through, then puts typeguard
back, so the caller's own ``@typechecked`` code is untouched. It only applies when
``hear_features`` is imported before Feast: ``feast`` commands (``feast apply``,
``feast materialize``, ``feast serve``) import Feast first and keep its checks, so a
user's feature definitions are still checked where they are applied. Set
``HEAR_FEAST_TYPECHECKS=1`` to keep the checks everywhere.

The checks only raise on wrong argument types to Feast's constructors; they change no
value, so skipping them changes no result.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: Set to 1 to keep Feast's run-time type checks in hear-features processes too.
KEEP_CHECKS = "HEAR_FEAST_TYPECHECKS"


def _pass_through(target: Any = None, **_options: Any) -> Any:
    """``typechecked`` that checks nothing, as ``@typechecked`` or ``@typechecked(...)``."""
    return target if target is not None else (lambda decorated: decorated)


class _FeastWithoutTypechecks(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the top-level ``feast`` package."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "feast":
            return None
        sys.meta_path.remove(self)  # once: later look-ups go the usual way
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_without_checks(module: ModuleType) -> None:
            import typeguard

            original = typeguard.typechecked
            typeguard.typechecked = _pass_through
            try:
                exec_module(module)
            finally:
                typeguard.typechecked = original

        spec.loader.exec_module = exec_without_checks  # type: ignore[method-assign]
        return spec


def import_feast_without_typechecks() -> None:
    """Install the hook, unless Feast is already imported or ``HEAR_FEAST_TYPECHECKS=1``."""
    if "feast" in sys.modules or os.environ.get(KEEP_CHECKS, "") not in ("", "0"):
        return
    if not any(isinstance(f, _FeastWithoutTypechecks) for f in sys.meta_path):
        sys.meta_path.insert(0, _FeastWithoutTypechecks())
