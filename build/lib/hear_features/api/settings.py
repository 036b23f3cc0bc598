"""Service settings (pydantic-settings), read from ``HEAR_API_*`` environment variables so
that every uvicorn worker builds the same app (``hear-features serve`` sets them from its
options). Keys: ``HEAR_API_KEY`` (read role), ``HEAR_ADMIN_API_KEY`` (admin role),
``HEAR_API_KEYS_FILE`` (a TOML file of named keys; see :mod:`hear_features.api.auth`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hear_features.api.auth import Sensitive
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hear_features.errors import ConfigError

ENV_PREFIX = "HEAR_API_"


class ApiSettings(BaseSettings):
    """Limits and locations of one service."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    repo: Path | None = None
    """Feature repository (default: ./feature_repo or the current directory)."""
    api_key: str | None = Field(
        default=None, repr=False, validation_alias=AliasChoices("api_key", "HEAR_API_KEY")
    )
    """A key with the read role; clients send it as ``X-API-Key``."""
    admin_api_key: str | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("admin_api_key", "HEAR_ADMIN_API_KEY"),
    )
    """A key with the admin role (distinct from every other key)."""
    keys_file: Path | None = None
    """A TOML file of named keys with roles (``HEAR_API_KEYS_FILE``)."""
    read_max_k: int = 100
    """Neighbours per query for read keys (admin keys: ``max_k``)."""
    read_max_rows: int = 10_000
    """Rows of one training set for read keys (entity rows, or seeds x k)."""
    admin_max_rows: int = 100_000
    read_sees: list[Sensitive] = Field(default_factory=list)
    """What read keys (and the anonymous caller of a key-less server) may see by default:
    any of subject_id, metadata, embedding, path. Admin keys see everything."""
    rate_per_s: float = 50.0
    """Requests per second per key (token bucket; 0 turns rate limits off)."""
    rate_burst: int = 200
    """Requests a key may send at once before its rate applies."""
    host: str = "127.0.0.1"
    max_upload_mb: float = 20.0
    max_audio_s: float = 600.0
    max_k: int = 1000
    max_json_mb: float = 4.0
    concurrency: int = 2
    """Look-ups (searches, clip look-ups, media, maps) worked on at once."""
    upload_concurrency: int = 1
    """Uploads decoded at once (slots of their own: uploads never delay look-ups)."""
    training_concurrency: int = 1
    """Training sets built at once."""
    slot_wait_s: float = 10.0
    """How long a request waits for a free work slot before a 503."""
    time_budget_s: float = 30.0
    """Seconds of work one request may take (decoding stops; other work is answered 503)."""
    max_decoded_msamples: float = 57.6
    """Decoding budget per upload, in millions of samples (sample rate x channels x
    seconds; 57.6 = 10 minutes of 48 kHz stereo), checked from the header first."""
    header_timeout_s: float = 10.0
    """A connection must send a request's headers within this many seconds."""
    max_connections: int = 256
    """Open connections (and requests) at once per worker; more are answered 503."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names the server answers to, besides localhost (checked when bound to a
    loopback address: DNS rebinding). On other addresses: checked only when given."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (none: no CORS headers)."""
    public_docs: bool = False
    """Serve /openapi.json without a key."""
    public_metrics: bool = False
    """Serve /metrics without a key."""
    refresh_s: float = 1.0
    """How often a worker checks the store for a newer index."""
    load_encoder: bool = True
    batch_wait_ms: float = 5.0
    """How long the encoder waits for more clips to share a batch."""

    @field_validator(
        "max_upload_mb",
        "max_audio_s",
        "max_k",
        "concurrency",
        "max_json_mb",
        "upload_concurrency",
        "training_concurrency",
        "slot_wait_s",
        "time_budget_s",
        "max_decoded_msamples",
        "header_timeout_s",
        "max_connections",
        "read_max_k",
        "read_max_rows",
        "admin_max_rows",
        "rate_burst",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("rate_per_s")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 (off) or positive")
        return value

    @classmethod
    def from_env(cls) -> ApiSettings:
        """Settings from the environment, checked (see :meth:`check_exposure`)."""
        try:
            settings = cls()
        except ValidationError as exc:
            raise ConfigError(f"invalid {ENV_PREFIX}* setting: {exc}") from exc
        settings.check_exposure()
        return settings

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)

    @property
    def has_keys(self) -> bool:
        return bool(self.api_key or self.admin_api_key or self.keys_file)

    def check_exposure(self) -> None:
        """A server reachable from other machines must have an API key."""
        if not is_loopback(self.host) and not self.has_keys:
            raise ConfigError(
                f"refusing to serve on {self.host} without an API key: set HEAR_API_KEY, "
                "HEAR_ADMIN_API_KEY or HEAR_API_KEYS_FILE (clients send a key as the "
                "X-API-Key header), or bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
