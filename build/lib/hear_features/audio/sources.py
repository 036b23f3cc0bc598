"""Which audio locations may be read: a URI scheme allow-list and root confinement.

Paths reach the feature store from manifests and registration tables that other people
may have written, so a location is checked before anything opens it. Only local files
are read (a plain path or a ``file://`` URI): any other scheme (``http``, ``s3``,
``data`` ...) is refused by name rather than guessed at. When audio roots are configured
(``audio_roots`` in the ``batch_engine`` section of ``feature_store.yaml``, or
``HEAR_AUDIO_ROOTS``), the location, with every symbolic link resolved, must lie inside
one of them, so ``../../etc/passwd`` or a link pointing out of a root is refused too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hear_features.errors import ConfigError, SourceRefused

#: Environment variable with audio roots (``os.pathsep``-separated); wins over the YAML.
AUDIO_ROOTS_ENV = "HEAR_AUDIO_ROOTS"

#: The schemes we read: local files only.
ALLOWED_SCHEMES = frozenset({"file"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class AudioSources:
    """The policy: ``roots`` empty means any local file the process can read."""

    roots: tuple[Path, ...] = ()

    @classmethod
    def from_roots(
        cls, roots: Iterable[str | os.PathLike[str]], base: Path | None = None
    ) -> AudioSources:
        """Roots as given in configuration; relative ones are relative to ``base``."""
        resolved = []
        for raw in roots:
            text = os.fspath(raw).strip()
            if not text:
                continue
            if _SCHEME.match(text):
                raise ConfigError(f"audio root {text!r} must be a local folder, not a URL")
            path = Path(text).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            if not path.is_dir():
                raise ConfigError(f"audio root {path} is not an existing folder")
            resolved.append(path.resolve())
        return cls(tuple(resolved))

    @classmethod
    def from_config(
        cls, configured: Iterable[str] | str | None, base: Path | None = None
    ) -> AudioSources:
        """From the YAML value (a list or one path); ``HEAR_AUDIO_ROOTS`` overrides it."""
        env = os.environ.get(AUDIO_ROOTS_ENV)
        if env:
            return cls.from_roots(env.split(os.pathsep), base)
        if configured is None:
            return cls()
        if isinstance(configured, str):
            configured = [configured]
        return cls.from_roots(configured, base)

    @property
    def confined(self) -> bool:
        return bool(self.roots)

    def local_path(self, location: str | os.PathLike[str]) -> Path:
        """The local file behind ``location``, or :class:`SourceRefused` saying why not."""
        path = self.parse(location)
        self.check(path)
        return path

    @staticmethod
    def parse(location: str | os.PathLike[str]) -> Path:
        """``location`` as a local path (a relative one stays relative), refusing any
        scheme but ``file``; the roots are not checked here."""
        text = os.fspath(location)
        if "\x00" in text:
            raise SourceRefused(repr(text), "contains a NUL character")
        match = _SCHEME.match(text)
        if match:
            scheme = match.group(1).lower()
            if scheme not in ALLOWED_SCHEMES:
                raise SourceRefused(
                    text,
                    f"URI scheme {scheme!r} is not allowed; only local files "
                    f"({', '.join(sorted(ALLOWED_SCHEMES))}:// or a plain path) are read",
                )
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise SourceRefused(text, f"file URI names a remote host {parts.netloc!r}")
            return Path(unquote(parts.path))
        return Path(text)

    def check(self, path: Path) -> None:
        """Refuse ``path`` when roots are configured and it resolves outside all of them."""
        if not self.roots:
            return
        try:
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            real = Path(os.path.realpath(path))  # outside or not, reading it will say
        except OSError as exc:  # a symbolic link loop, a permission problem
            raise SourceRefused(path, f"cannot be resolved: {exc.strerror or exc}") from exc
        if not any(real.is_relative_to(root) for root in self.roots):
            shown = ", ".join(str(r) for r in self.roots)
            raise SourceRefused(
                path, f"is outside the configured audio roots ({shown}); resolved to {real}"
            )
