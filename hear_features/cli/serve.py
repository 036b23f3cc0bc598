"""``hear-features serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hear_features.cli.common import console, reports_errors, setup_logging
from hear_features.featurestore.repo import find_repo


@reports_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; non-loopback needs an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes.")] = 1,
    repo: Annotated[Path | None, typer.Option(help="Feature repository.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="HEAR_API_KEY", help="Required X-API-Key value.", show_default=False),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001)] = 20.0,
    max_audio_s: Annotated[float, typer.Option(min=1)] = 600.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve similarity search, clip look-up and training sets over HTTP (OpenAPI at /docs)."""
    # Idle OpenMP threads must sleep, not spin on the cores the requests need. Read when
    # the OpenMP runtime starts, i.e. in each worker before FAISS or TensorFlow load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from hear_features.api.settings import ApiSettings

    setup_logging(verbose)
    settings = ApiSettings(
        repo=find_repo(repo),
        api_key=api_key,
        host=host,
        max_upload_mb=max_upload_mb,
        max_audio_s=max_audio_s,
    )
    settings.check_exposure()
    # Workers are separate processes that build the app from the environment.
    os.environ["HEAR_API_REPO"] = str(settings.repo)
    os.environ["HEAR_API_HOST"] = host
    os.environ["HEAR_API_MAX_UPLOAD_MB"] = str(max_upload_mb)
    os.environ["HEAR_API_MAX_AUDIO_S"] = str(max_audio_s)
    if api_key:
        os.environ["HEAR_API_KEY"] = api_key
    console.print(
        f"serving {settings.repo} on http://{host}:{port} (docs at /docs)", highlight=False
    )
    uvicorn.run(
        "hear_features.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info" if verbose else "warning",
    )
