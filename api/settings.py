"""Service settings, read from the environment so that every uvicorn worker builds the
same app (``hear-features serve`` sets them from its options)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from hear_features.errors import ConfigError

ENV_PREFIX = "HEAR_API_"


class ApiSettings(BaseModel):
    """Limits and locations of one service."""

    repo: Path | None = None
    """Feature repository (default: ./feature_repo or the current directory)."""
    api_key: str | None = Field(default=None, repr=False)
    """Clients send it as ``X-API-Key``; required when the server binds a public address."""
    host: str = "127.0.0.1"
    max_upload_mb: float = 20.0
    max_audio_s: float = 600.0
    max_k: int = 1000
    max_json_mb: float = 4.0
    concurrency: int = 2
    """CPU-heavy work (decoding, encoding, search) admitted at once."""
    refresh_s: float = 1.0
    """How often a worker checks the store for a newer index."""
    load_encoder: bool = True
    batch_wait_ms: float = 5.0
    """How long the encoder waits for more clips to share a batch."""

    @field_validator("max_upload_mb", "max_audio_s", "max_k", "concurrency", "max_json_mb")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @classmethod
    def from_env(cls) -> ApiSettings:
        """Settings from ``HEAR_API_*`` variables (``HEAR_API_KEY`` for the key)."""
        raw = {
            name: os.environ[f"{ENV_PREFIX}{name.upper()}"]
            for name in cls.model_fields
            if f"{ENV_PREFIX}{name.upper()}" in os.environ
        }
        if "HEAR_API_KEY" in os.environ:
            raw["api_key"] = os.environ["HEAR_API_KEY"]
        try:
            settings = cls.model_validate(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid HEAR_API_* setting: {exc}") from exc
        settings.check_exposure()
        return settings

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)

    def check_exposure(self) -> None:
        """A server reachable from other machines must have an API key."""
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(
                f"refusing to serve on {self.host} without an API key: set HEAR_API_KEY "
                "(clients send it as the X-API-Key header), or bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
