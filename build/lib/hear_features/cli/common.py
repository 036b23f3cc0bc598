"""Options and error reporting shared by every ``hear-features`` command.

Light on purpose: the CLI imports this (and every command's signature) to answer
``--help``, so nothing here may import numpy, pyarrow, TensorFlow or Feast at module
level. Commands import their heavy modules inside their bodies.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from hear_features.defaults import DEFAULT_MODEL, MODEL_ENV, OUTPUT_FORMATS
from hear_features.errors import ConfigError, HearFeaturesError

if TYPE_CHECKING:
    from hear_features.audio import AudioLimits, WindowConfig

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one red line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except HearFeaturesError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as exc:  # configuration objects validate their own fields
            err_console.print(f"[bold red]invalid setting:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A local SavedModel directory, a Hugging Face repo id, or 'standin' "
        f"(default: ${MODEL_ENV}, else {DEFAULT_MODEL}).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option(help="Hub revision (branch, tag or commit) of --model.")
]
BatchOpt = Annotated[int, typer.Option(min=1, max=4096, help="Clips per encoder call.")]
DeviceOpt = Annotated[
    str, typer.Option(help="Where the encoder runs: auto (GPU if visible), cpu or gpu.")
]
ModeOpt = Annotated[
    str, typer.Option(help="Windows: 'fixed' (every --hop seconds) or 'event' (one per burst).")
]
HopOpt = Annotated[float, typer.Option(min=0.01, max=2.0, help="Seconds between fixed windows.")]
MinRmsOpt = Annotated[
    float,
    typer.Option(help="Skip windows quieter than this RMS level in dBFS."),
]
KeepSilentOpt = Annotated[bool, typer.Option(help="Keep quiet windows (ignore --min-rms-db).")]
MaxDurationOpt = Annotated[
    float, typer.Option(min=1.0, help="Refuse recordings longer than this many seconds.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        help="COLUMN OP VALUE on any metadata column, study columns included (repeatable, "
        "all must hold; OP: = != < <= > >= in, not in), e.g. --where 'age >= 18'.",
    ),
]


def _output_path(value: Path | None) -> Path | None:
    """Refuse an ``--out`` ending we do not write before any work starts."""
    from hear_features.outputs import output_format

    if value is not None:
        try:
            output_format(value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        callback=_output_path,
        help=f"Table to write; its ending picks the format: {', '.join(OUTPUT_FORMATS)}.",
    ),
]

RepoOpt = Annotated[
    Path | None,
    typer.Option(
        help="Feature repository (default: . if it has feature_store.yaml, else ./feature_repo)."
    ),
]


def parse_time(value: str | None, what: str) -> dt.datetime | None:
    """An ISO 8601 option value as an aware UTC datetime (naive means UTC), read by the
    one timestamp parser (:mod:`hear_features.timestamps`)."""
    from hear_features.timestamps import parse_timestamp

    return None if value is None else parse_timestamp(value, what)


def window_config(mode: str, hop: float, min_rms_db: float, keep_silent: bool) -> WindowConfig:
    from hear_features.audio import WindowConfig

    return WindowConfig(
        mode=mode,  # type: ignore[arg-type]  # validated by WindowConfig
        hop_s=hop,
        min_rms_db=None if keep_silent else min_rms_db,
    )


def audio_limits(max_duration: float) -> AudioLimits:
    from hear_features.audio import AudioLimits

    return AudioLimits(max_duration_s=max_duration)
