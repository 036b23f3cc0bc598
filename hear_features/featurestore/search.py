"""Similar-clip search through Feast's own vector retrieval (``retrieve_online_documents_v2``).

The online store answers from its FAISS index. Feast returns the hits in entity-key order
(see :meth:`HearOnlineStore.retrieve_online_documents_v2`); this helper puts them back in
ranking order and returns plain dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.filter_models import ComparisonFilter, CompoundFilter

from hear_features.featurestore.repo import EMBEDDINGS_VIEW

#: What a search hit shows by default (the vector itself is left out: 512 floats).
HIT_FEATURES = (
    "label",
    "subject_id",
    "dataset",
    "device",
    "recording_id",
    "audio_uri",
    "offset_s",
    "model_id",
)


def similar_clips(
    store: FeatureStore,
    vector: Sequence[float] | np.ndarray,
    k: int,
    *,
    filters: ComparisonFilter | CompoundFilter | None = None,
    features: Sequence[str] = HIT_FEATURES,
    view: str = EMBEDDINGS_VIEW,
) -> list[dict[str, Any]]:
    """The ``k`` stored clips nearest to ``vector``, nearest first.

    Each hit is a dict with ``clip_id``, ``distance`` (1 - cosine) and the features.
    """
    response = store.retrieve_online_documents_v2(
        features=[f"{view}:{name}" for name in features],
        query=[float(v) for v in vector],
        top_k=k,
        filters=filters,
    ).to_dict()
    if not response or not response.get("clip_id"):
        return []
    hits = [
        dict(zip(response, values, strict=True)) for values in zip(*response.values(), strict=True)
    ]
    return sorted(hits, key=lambda hit: hit["distance"])
