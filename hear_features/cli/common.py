"""Options and error reporting shared by every ``hear-features`` command."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from hear_features.audio import AudioLimits, WindowConfig
from hear_features.encoders.hear import DEFAULT_BATCH_SIZE
from hear_features.encoders.resolve import MODEL_ENV
from hear_features.errors import HearFeaturesError

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
    str,
    typer.Option(
        "--model",
        "-m",
        envvar=MODEL_ENV,
        help="A local SavedModel directory, a Hugging Face repo id, or 'standin'.",
        show_default=True,
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

DEFAULT_MODEL = "google/hear"
DEFAULT_BATCH = DEFAULT_BATCH_SIZE


def window_config(mode: str, hop: float, min_rms_db: float, keep_silent: bool) -> WindowConfig:
    return WindowConfig(
        mode=mode,  # type: ignore[arg-type]  # validated by WindowConfig
        hop_s=hop,
        min_rms_db=None if keep_silent else min_rms_db,
    )


def audio_limits(max_duration: float) -> AudioLimits:
    return AudioLimits(max_duration_s=max_duration)
