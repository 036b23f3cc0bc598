"""``hear-features serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from hear_features.cli.common import (
    RepoOpt,
    VerboseOpt,
    console,
    err_console,
    reports_errors,
    setup_logging,
)


@reports_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; non-loopback needs an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes.")] = 1,
    repo: RepoOpt = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="HEAR_API_KEY",
            help="A key with the read role (prefer the environment variable: ps shows "
            "command lines to every user).",
            show_default=False,
        ),
    ] = None,
    admin_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="HEAR_ADMIN_API_KEY",
            help="A key with the admin role (prefer the environment variable).",
            show_default=False,
        ),
    ] = None,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            envvar="HEAR_API_KEYS_FILE",
            help="TOML file of named keys with roles, what each may see, and limits.",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001)] = 20.0,
    max_audio_s: Annotated[float, typer.Option(min=1)] = 600.0,
    verbose: VerboseOpt = False,
) -> None:
    """Serve similarity search, clip look-up and training sets over HTTP (OpenAPI at /docs)."""
    for flag, value, variable in (
        ("--api-key", api_key, "HEAR_API_KEY"),
        ("--admin-api-key", admin_api_key, "HEAR_ADMIN_API_KEY"),
    ):
        if value and os.environ.get(variable) != value:  # it came from the command line
            err_console.print(
                f"[bold yellow]warning:[/] {flag} on the command line is visible to every "
                f"user of this machine (ps); set {variable} or use --api-keys-file",
                highlight=False,
            )
    import uvicorn

    from hear_features.api.auth import KeyRing
    from hear_features.api.balance import shared_table
    from hear_features.api.server import uvicorn_options
    from hear_features.api.settings import ApiSettings
    from hear_features.featurestore.config import find_repo

    setup_logging(verbose)
    settings = ApiSettings(
        repo=find_repo(repo),
        api_key=api_key,
        admin_api_key=admin_api_key,
        keys_file=api_keys_file.resolve() if api_keys_file else None,
        host=host,
        max_upload_mb=max_upload_mb,
        max_audio_s=max_audio_s,
    )
    settings.check_exposure()
    KeyRing.from_settings(settings)  # a bad key or key file stops us here, said once
    # Workers are separate processes that build the app from the environment.
    os.environ["HEAR_API_REPO"] = str(settings.repo)
    os.environ["HEAR_API_HOST"] = host
    os.environ["HEAR_API_MAX_UPLOAD_MB"] = str(max_upload_mb)
    os.environ["HEAR_API_MAX_AUDIO_S"] = str(max_audio_s)
    # Keys travel to the workers in the environment, which only this user can read.
    for name, value in (
        ("HEAR_API_KEY", api_key),
        ("HEAR_ADMIN_API_KEY", admin_api_key),
        ("HEAR_API_KEYS_FILE", settings.keys_file),
    ):
        if value:
            os.environ[name] = str(value)
    url = f"http://{_url_host(host)}:{port}"
    console.print(f"starting: {settings.repo} on {url} ...", highlight=False)
    announce_when_ready(f"{_probe_host(host)}:{port}", f"{settings.repo} on {url}")
    with shared_table(workers):  # keep-alive connections spread over the workers
        uvicorn.run(
            "hear_features.api.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info" if verbose else "warning",
            **uvicorn_options(settings.header_timeout_s, settings.max_connections),
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _probe_host(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard bind: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, _url_host(host))


def announce_when_ready(address: str, what: str, poll_s: float = 0.5) -> threading.Thread:
    """Print ``ready: WHAT`` once ``http://ADDRESS/readyz`` answers 200, from a daemon thread.

    Why not before: uvicorn binds first, then each worker loads the index and the encoder,
    which can take minutes on a loaded machine; a "serving" line printed at start told
    people to connect to a port that refused them. A host name the server refuses (400,
    ``HEAR_API_ALLOWED_HOSTS`` on a public bind) is reported as listening, not ready."""

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy

    def poll() -> None:
        while True:
            try:
                with opener.open(f"http://{address}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        console.print(f"ready: serving {what} (docs at /docs)", highlight=False)
                        return
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503):
                    console.print(
                        f"listening: {what} (/readyz answered {exc.code} here; check "
                        "readiness where clients connect)",
                        highlight=False,
                    )
                    return
            except OSError:  # not listening yet
                pass
            time.sleep(poll_s)

    thread = threading.Thread(target=poll, name="announce-ready", daemon=True)
    thread.start()
    return thread
