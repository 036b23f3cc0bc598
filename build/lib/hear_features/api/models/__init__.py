"""Request and response models of the HTTP API (they make up the OpenAPI schema at /docs).

One module per resource, like the routers: :mod:`.search`, :mod:`.training`,
:mod:`.embedding_map`, :mod:`.forget` (deletion), :mod:`.service` (health and the error
body), and :mod:`.text` (the limits every text value of a request obeys). Import from here.
"""

from hear_features.api.models.embedding_map import (
    EmbeddingMapPage,
    MapColumn,
    MapColumnInfo,
    MapInfo,
    MapPending,
)
from hear_features.api.models.forget import ForgetRequest, ForgetResponse
from hear_features.api.models.search import (
    RECORDING_FIELDS,
    Aggregation,
    AudioSearchResponse,
    ClipResponse,
    Filters,
    Neighbour,
    RecordingMatch,
    SimilarResponse,
    StoredClip,
    VectorSearchRequest,
    VectorSearchResponse,
    WindowResult,
    WindowStrategy,
)
from hear_features.api.models.service import (
    ErrorBody,
    ErrorResponse,
    Health,
    Readiness,
    ServiceStatus,
    error_responses,
)
from hear_features.api.models.text import (
    MAX_FILTER_VALUES,
    MAX_TEXT,
    FilterValues,
    Text,
    unicode_text,
)
from hear_features.api.models.training import (
    BUILT_IN_COLUMNS,
    EXTRA_COLUMN,
    MAX_LIST,
    YEARS,
    EntityRow,
    TrainingSetRequest,
    TrainingSetResponse,
)

__all__ = [
    "BUILT_IN_COLUMNS",
    "EXTRA_COLUMN",
    "MAX_FILTER_VALUES",
    "MAX_LIST",
    "MAX_TEXT",
    "RECORDING_FIELDS",
    "YEARS",
    "Aggregation",
    "AudioSearchResponse",
    "ClipResponse",
    "EmbeddingMapPage",
    "EntityRow",
    "ErrorBody",
    "ErrorResponse",
    "FilterValues",
    "Filters",
    "ForgetRequest",
    "ForgetResponse",
    "Health",
    "MapColumn",
    "MapColumnInfo",
    "MapInfo",
    "MapPending",
    "Neighbour",
    "Readiness",
    "RecordingMatch",
    "ServiceStatus",
    "SimilarResponse",
    "StoredClip",
    "Text",
    "TrainingSetRequest",
    "TrainingSetResponse",
    "VectorSearchRequest",
    "VectorSearchResponse",
    "WindowResult",
    "WindowStrategy",
    "error_responses",
    "unicode_text",
]
