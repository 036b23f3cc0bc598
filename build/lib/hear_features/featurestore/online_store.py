"""The online store's plugin path, as ``feature_store.yaml`` names it::

    online_store:
      type: hear_features.featurestore.online_store.HearOnlineStore

Feast imports the class named by ``type`` and its ``...Config`` class from this module;
the code lives in :mod:`hear_features.featurestore.online`.
"""

from __future__ import annotations

from hear_features.featurestore.online.store import HearOnlineStore, HearOnlineStoreConfig

__all__ = ["HearOnlineStore", "HearOnlineStoreConfig"]
