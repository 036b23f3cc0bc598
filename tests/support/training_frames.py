"""The same training set read two ways, and a comparison that checks values and types."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from hear_features.featurestore import training


def both_ways(
    store: Any, entities: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training set read at one timestamp, and the same through Feast."""
    fast = training.training_set(store, entities)
    with monkeypatch.context() as patch:
        patch.setattr(training, "ONE_TIME_MAX_ROWS", 0)  # every read through Feast
        slow = training.training_set(store, entities)
    return fast, slow


def assert_same(fast: pd.DataFrame, slow: pd.DataFrame) -> None:
    assert list(fast.columns) == list(slow.columns)
    assert fast.dtypes.equals(slow.dtypes), (fast.dtypes, slow.dtypes)
    for column in fast.columns:
        if column == "embedding":
            for a, b in zip(fast[column], slow[column], strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)
        else:
            pd.testing.assert_series_equal(fast[column], slow[column])
