"""Whether a repository's Feast registry may have changed since a cache was filled.

Everything the search service derives from the registry (the view object, its vector
field, the index it maps to) stays valid until ``feast apply`` writes a new registry.
For a registry in a local file that is one ``stat``: the token changes with the file's
modification time, size or inode (``feast apply`` replaces the file). For any other
registry (SQL, remote object stores) the token changes every ``cache_ttl_seconds``, the
staleness Feast itself allows its registry cache (0: never, as in Feast).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

from feast.repo_config import RepoConfig

Token = tuple[int, ...]


class RegistryWatch:
    """A cheap token for the state of one repository's registry."""

    def __init__(self, config: RepoConfig) -> None:
        registry = config.registry
        self.path = _local_file(registry.registry_type, registry.path, config.repo_path)
        self.ttl_s = float(registry.cache_ttl_seconds)

    def token(self) -> Token:
        """Changes whenever the registry may have changed (see the module doc)."""
        if self.path is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return (0,)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        if self.ttl_s <= 0:
            return (0,)
        return (int(time.monotonic() // self.ttl_s),)


def _local_file(kind: str, path: str, repo: Path | str | None) -> Path | None:
    """The registry's file when it is a file on this machine (None otherwise)."""
    if kind != "file" or not path:
        return None
    scheme = urlparse(path).scheme
    if scheme not in ("", "file") and len(scheme) != 1:  # one letter: a Windows drive
        return None
    local = Path(path.removeprefix("file://"))
    if not local.is_absolute() and repo is not None:
        local = Path(repo) / local
    return local
