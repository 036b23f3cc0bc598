"""Feast integration: registration, the batch engine, the online store, training sets."""

from __future__ import annotations
