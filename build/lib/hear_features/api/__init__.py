"""The HTTP API: similarity search, clip look-up and training sets over a feature repository.

Imported as ``hear_features.api`` (the folder is mapped into the package by
``pyproject.toml``). Start it with ``hear-features serve``.
"""

from __future__ import annotations
