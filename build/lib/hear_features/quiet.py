"""Third-party start-up chatter that nobody running ``feast`` or ``hear-features`` can act on.

Three sources, found by running the stock ``feast apply`` / ``feast materialize``:

* FAISS's loader logs at INFO every import, including
  ``ModuleNotFoundError("No module named 'faiss.swigfaiss_avx2'")`` while it looks for
  the fastest build (normal on CPUs without AVX-512 or wheels without AVX2), and Feast's
  CLI sets the root logger to INFO when it imports ``feast.cli.serve``, so those lines
  reach the terminal and read like a failure. :func:`quiet_loggers` sets ``faiss.loader``
  to WARNING unless the application already chose a level for it.
* TensorFlow's C++ runtime writes ``WARNING: All log messages before absl::InitializeLog()
  ...`` and an ``I0000 ... oneDNN custom operations are on`` line to the process's stderr
  while it is imported, before ``TF_CPP_MIN_LOG_LEVEL`` is read, so the variable cannot
  silence them. :func:`filtered_stderr` wraps the import, drops exactly those known
  lines and passes every other byte through.
* Feast warns that on-demand feature views are experimental each time it applies or
  reads ours (a file path and a ``warnings.warn(`` line that look like a traceback), and
  ibis warns about DuckDB's deprecated ``fetch_arrow_table`` on every offline read;
  :func:`quiet_warnings` ignores exactly those two messages.

And under the stock ``feast`` command only (:func:`quiet_feast_cli`): Feast's CLI sets
the root logger to INFO, which would print this project's own INFO lines (the encoder
loaded, the index built) on every ``feast apply`` / ``feast materialize``; the project's
loggers are set to WARNING there (warnings still print). And an error of ours
(:class:`~hear_features.errors.HearFeaturesError`: something the user can fix, said in
plain words) that ends a ``feast`` command prints as one line, ``error: ...``, instead
of a Python traceback through Feast's internals; ``HEAR_FEATURES_TRACEBACK=1`` brings
the traceback back. Other exceptions are left as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from types import TracebackType

#: Loggers whose INFO output is noise for a user (the FAISS loader's failed AVX2 import;
#: TensorFlow's and absl's notes while a SavedModel is written); set to WARNING unless
#: already set.
NOISY_LOGGERS = ("faiss.loader", "absl", "tensorflow")

#: Lines the TensorFlow runtime writes to fd 2 during import that carry no information
#: for a user (and cannot be silenced by TF_CPP_MIN_LOG_LEVEL).
TENSORFLOW_IMPORT_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
)


def quiet_loggers() -> None:
    """Raise the noisy third-party loggers to WARNING where nobody configured them."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def quiet_feast_cli(argv0: str | None = None) -> bool:
    """Under the ``feast`` command: the project's loggers at WARNING (unless already set)
    and our errors as one line (see the module doc). Returns whether it applied."""
    program = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if program != "feast":
        return False
    project = logging.getLogger("hear_features")
    if project.level == logging.NOTSET:
        project.setLevel(logging.WARNING)
    if not os.environ.get("HEAR_FEATURES_TRACEBACK"):
        sys.excepthook = _one_line_hook(sys.excepthook)
    return True


ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


def _one_line_hook(previous: ExceptHook) -> ExceptHook:
    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        from hear_features.errors import HearFeaturesError

        if isinstance(exc, HearFeaturesError):
            sys.stderr.write(f"error: {exc}\n")
            return
        previous(kind, exc, tb)

    return hook


def quiet_warnings() -> None:
    """Ignore the two third-party warnings above (nothing else)."""
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)


@contextlib.contextmanager
def filtered_stderr(drop: tuple[str, ...] = TENSORFLOW_IMPORT_NOISE) -> Iterator[None]:
    """Capture the process's stderr (file descriptor 2, so C++ output too) while the block
    runs, then write back every line that contains none of ``drop``.

    Nothing is lost: lines that do not match, including real errors, come out in order
    when the block ends (or raises). Where fd 2 cannot be redirected, the block simply
    runs unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().splitlines(keepends=True)
                if not any(d.encode() in line for d in drop)
            ]
            if kept:
                os.write(2, b"".join(kept))
