"""Who is asking and what they may do: API keys with roles, and per-key rate limits.

Keys reach a server from the environment or a key file, never only from the command
line (``ps`` shows every process's arguments to every user):

- ``HEAR_API_KEY``: one key with the ``read`` role;
- ``HEAR_ADMIN_API_KEY``: one key with the ``admin`` role;
- ``HEAR_API_KEYS_FILE``: a TOML file of named keys, each with a role and, optionally,
  what it may see and its own limits (:class:`KeySpec`)::

      [[keys]]
      name = "ward-study-analysts"
      role = "read"
      sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      see = ["subject_id", "embedding"]
      max_k = 200

A key is at least :data:`MIN_KEY_LENGTH` characters; keys are compared as SHA-256
digests in constant time, so a file may hold the digest (``sha256``) instead of the key.

Roles (:class:`Role`):

- ``read``: search, clip look-up, clip media, training sets, the map. By default it sees
  ids (clip, recording), offsets, labels, dataset, device, scores and timestamps only.
- ``admin``: everything ``read`` may do, sees every field, and deletes data.

What a key may see beyond that (:class:`Sensitive`, the key's ``see`` list): participant
ids, study metadata (every column the API does not know as public), raw embeddings and
the recording's path relative to its audio root. Server paths are never shown to anyone.

A server with no key at all (allowed on a loopback address only) treats every request
as an anonymous ``read`` caller with the ``read`` defaults: privacy by default.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hear_features.errors import ConfigError, Forbidden, InputShapeError, RateLimited, Unauthorized

if TYPE_CHECKING:
    from hear_features.api.settings import ApiSettings

#: Shorter keys are refused at start-up: a key is a password that nobody types.
MIN_KEY_LENGTH = 16


class Role(StrEnum):
    read = "read"
    """Search, look up, build training sets; sees what its key is allowed to."""
    admin = "admin"
    """Everything, every field, and deleting data."""


class Sensitive(StrEnum):
    """Kinds of data a key must be explicitly allowed to see (``see`` in the key file)."""

    subject_id = "subject_id"
    """Participant ids: the ``subject_id`` field, and filters on it."""
    metadata = "metadata"
    """Study metadata: any column the API does not list as public."""
    embedding = "embedding"
    """Raw embedding vectors (``include_embedding``, training-set vectors)."""
    path = "path"
    """The recording's path relative to its audio root (folder names can name people)."""


@dataclass(frozen=True)
class Caller:
    """The identity behind one request, with what it may see and how much it may ask for.

    ``max_k``: neighbours per query; ``max_rows``: rows of one training set (entity rows,
    or seeds x k); ``rate_per_s`` / ``burst``: its token bucket (0: unlimited)."""

    name: str
    role: Role
    sees: frozenset[Sensitive]
    max_k: int
    max_rows: int
    rate_per_s: float = 0.0
    burst: int = 0
    anonymous: bool = False
    """The caller of a key-less server (no key was asked for)."""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def may_see(self, kind: Sensitive) -> bool:
        return kind in self.sees

    def check_k(self, k: int) -> None:
        """:class:`InputShapeError` (422) unless ``1 <= k <= max_k`` for this caller."""
        if not 1 <= k <= self.max_k:
            raise InputShapeError(
                f"k must be between 1 and {self.max_k} for this key (role {self.role}), got {k}"
            )

    def check_rows(self, rows: int, what: str) -> None:
        if rows > self.max_rows:
            raise InputShapeError(
                f"{what} would give {rows} rows; the limit for this key (role {self.role}) "
                f"is {self.max_rows}"
            )

    def require(self, kind: Sensitive, why: str) -> None:
        """:class:`Forbidden` (403) unless this caller may see ``kind``."""
        if not self.may_see(kind):
            raise Forbidden(
                f"{why} needs a key that may see {kind}; this key ({self.name}) may not"
            )

    def require_admin(self, why: str) -> None:
        """:class:`Forbidden` (403) unless this caller holds an admin key."""
        if self.anonymous:
            raise Forbidden(
                f"{why} needs an admin key, and this server has none: start it with "
                "HEAR_ADMIN_API_KEY (or an admin entry in HEAR_API_KEYS_FILE)"
            )
        if not self.is_admin:
            raise Forbidden(
                f"{why} needs an admin key; this key ({self.name}) has role {self.role}"
            )


class KeySpec(BaseModel):
    """One ``[[keys]]`` entry of the key file: the key (or its SHA-256), a role, and
    optionally what it may see and its own limits (the role's defaults otherwise)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[\w.@-]+$")
    role: Role = Role.read
    key: SecretStr | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    see: list[Sensitive] | None = None
    max_k: int | None = Field(default=None, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    rate_per_s: float | None = Field(default=None, ge=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_KEY_LENGTH} characters long")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'key' and 'sha256'")
        return self

    def digest(self) -> bytes:
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self.key is not None
        return _digest(self.key.get_secret_value())


@dataclass(frozen=True)
class RoleDefaults:
    """What a role's keys get unless their entry says otherwise."""

    sees: frozenset[Sensitive]
    max_k: int
    max_rows: int


def role_defaults(settings: ApiSettings) -> dict[Role, RoleDefaults]:
    return {
        Role.read: RoleDefaults(
            frozenset(settings.read_sees),
            min(settings.read_max_k, settings.max_k),
            settings.read_max_rows,
        ),
        Role.admin: RoleDefaults(frozenset(Sensitive), settings.max_k, settings.admin_max_rows),
    }


@dataclass
class KeyRing:
    """The server's keys, looked up by the SHA-256 of what a client sends."""

    entries: list[tuple[bytes, Caller]] = field(default_factory=list)
    anonymous: Caller | None = None
    """Who a request without a key is on a server without keys (``None`` once keys exist)."""

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> KeyRing:
        """The keys of ``HEAR_API_KEY``, ``HEAR_ADMIN_API_KEY`` and ``HEAR_API_KEYS_FILE``.

        :class:`ConfigError` for a short key, one key given twice (e.g. the same value
        as read and admin key), or a malformed key file (naming the entry)."""
        specs: list[KeySpec] = []
        for name, role, secret in (
            ("api-key", Role.read, settings.api_key),
            ("admin-api-key", Role.admin, settings.admin_api_key),
        ):
            if secret:
                specs.append(_spec_from_env(name, role, secret))
        if settings.keys_file is not None:
            specs.extend(load_key_file(settings.keys_file))
        defaults = role_defaults(settings)
        ring = cls()
        seen_names: set[str] = set()
        for spec in specs:
            digest = spec.digest()
            if spec.name in seen_names:
                raise ConfigError(f"API key name {spec.name!r} is used twice")
            if any(hmac.compare_digest(digest, other) for other, _ in ring.entries):
                raise ConfigError(
                    f"API key {spec.name!r} has the same value as another key; every key "
                    "(in particular the admin key and the read key) must be distinct"
                )
            seen_names.add(spec.name)
            ring.entries.append((digest, _caller(spec, defaults[spec.role], settings)))
        if not ring.entries:
            read = defaults[Role.read]
            ring.anonymous = Caller(
                "anonymous",
                Role.read,
                read.sees,
                read.max_k,
                read.max_rows,
                settings.rate_per_s,
                settings.rate_burst,
                anonymous=True,
            )
        return ring

    @property
    def roles(self) -> set[Role]:
        return {caller.role for _, caller in self.entries}

    def identify(self, presented: str | None) -> Caller:
        """The caller a request's ``X-API-Key`` names, or :class:`Unauthorized`."""
        if self.anonymous is not None:
            return self.anonymous
        if not presented:
            raise Unauthorized("missing X-API-Key header")
        digest = _digest(presented)
        found: Caller | None = None
        for other, caller in self.entries:  # every entry, so timing says nothing
            if hmac.compare_digest(digest, other):
                found = caller
        if found is None:
            raise Unauthorized("wrong X-API-Key header")
        return found


def load_key_file(path: Path) -> list[KeySpec]:
    """The ``[[keys]]`` entries of a TOML key file (:class:`ConfigError` naming the problem)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the API key file {path} is not valid TOML: {exc}") from exc
    entries = raw.get("keys")
    unknown = sorted(set(raw) - {"keys"})
    if unknown or not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"the API key file {path} must hold one or more [[keys]] tables and nothing else"
        )
    specs = []
    for number, entry in enumerate(entries, 1):
        try:
            specs.append(KeySpec.model_validate(entry))
        except ValidationError as exc:
            label = entry.get("name", f"#{number}") if isinstance(entry, dict) else f"#{number}"
            raise ConfigError(
                f"API key file {path}, key {label}: {_problems(exc)}"
            ) from None  # the message would quote the key
    return specs


def _spec_from_env(name: str, role: Role, secret: str) -> KeySpec:
    if len(secret) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the {name} is {len(secret)} characters long; use at least {MIN_KEY_LENGTH} "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return KeySpec(name=name, role=role, key=SecretStr(secret))


def _caller(spec: KeySpec, defaults: RoleDefaults, settings: ApiSettings) -> Caller:
    return Caller(
        name=spec.name,
        role=spec.role,
        sees=frozenset(spec.see) if spec.see is not None else defaults.sees,
        max_k=min(spec.max_k or defaults.max_k, settings.max_k),
        max_rows=spec.max_rows or defaults.max_rows,
        rate_per_s=spec.rate_per_s if spec.rate_per_s is not None else settings.rate_per_s,
        burst=spec.burst or settings.rate_burst,
    )


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _problems(exc: ValidationError) -> str:
    # Never echo the input: it may be a key.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
    )


# ---- rate limits ---------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per caller: ``rate_per_s`` tokens a second, at most ``burst`` saved.

    One request takes one token; a request finding the bucket empty is refused with
    :class:`RateLimited` (429) saying when the next token comes. Per worker process."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def charge(self, caller: Caller, cost: float = 1.0) -> None:
        if caller.rate_per_s <= 0:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(caller.name)
            if bucket is None:
                bucket = self._buckets[caller.name] = _Bucket(float(caller.burst), now)
            bucket.tokens = min(
                float(caller.burst), bucket.tokens + (now - bucket.stamp) * caller.rate_per_s
            )
            bucket.stamp = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return
            wait = (cost - bucket.tokens) / caller.rate_per_s
        raise RateLimited(
            f"rate limit of {caller.rate_per_s:g} requests/s (burst {caller.burst}) for key "
            f"{caller.name} reached; retry after {math.ceil(wait)} s",
            retry_after_s=wait,
        )
