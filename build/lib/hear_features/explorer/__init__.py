"""What the explorer page shows, computed server-side: a registered clip's audio window
(:mod:`.clip_audio`), its spectrogram (:mod:`.spectrogram`) and a 2-D map of every
stored embedding (:mod:`.embedding_map`). The HTTP API only wires these to routes."""

from __future__ import annotations
