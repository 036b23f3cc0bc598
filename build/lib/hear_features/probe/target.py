"""The target column: which task it is, its classes, and its values as model inputs.

``auto`` makes a numeric column with more than
:data:`~hear_features.probe.config.MAX_CLASSES_AUTO` distinct values a regression
target and anything else a classification target (binary with two classes, multi-class
with more); with a ``positive`` class it is binary, that class against the rest. Units
without a target value (empty, NaN) are left out and counted; an infinite regression
target is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hear_features.errors import ProbeError
from hear_features.probe.config import MAX_CLASSES_AUTO, ProbeConfig


@dataclass(frozen=True)
class Target:
    """``y``: class indices into ``classes`` (int64), or float64 values for regression.

    For a binary task ``classes`` is ``[negative, positive]``, so a score is the
    probability of ``classes[1]``.
    """

    column: str
    task: str
    y: np.ndarray
    classes: tuple[str, ...] = ()
    positive: str | None = None
    missing: int = 0

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def class_counts(self) -> dict[str, int]:
        if not self.is_classification:
            return {}
        counts = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}


def present(frame: pd.DataFrame, config: ProbeConfig) -> np.ndarray:
    """Mask of the rows that have a target value (after checking the column exists)."""
    if config.target not in frame.columns:
        raise ProbeError(
            f"unknown target column {config.target!r}; the selection has: "
            f"{', '.join(sorted(str(c) for c in frame.columns if c != 'unit_id'))}"
        )
    values = frame[config.target]
    mask = values.notna().to_numpy()
    if values.dtype == object:
        mask &= values.astype(str).str.strip().ne("").to_numpy()
    return mask


def resolve(values: pd.Series, config: ProbeConfig, missing: int = 0) -> Target:
    """The task and encoded values of a target column without missing values."""
    name = config.target
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )
    distinct = values.nunique()
    task = config.task
    if task == "auto":
        if config.positive is not None:  # X against the rest, however many classes
            task = "binary"
        elif numeric and distinct > MAX_CLASSES_AUTO:
            task = "regression"
        else:
            task = "binary" if distinct == 2 else "multiclass"
    if task == "regression":
        if config.positive is not None:
            raise ProbeError("--positive names a class; it does not apply to --task regression")
        y = pd.to_numeric(values, errors="coerce")
        if y.isna().any():
            example = values[y.isna()].iloc[0]
            raise ProbeError(
                f"target {name!r} is not numeric (e.g. {example!r}); "
                "use --task binary or --task multiclass"
            )
        infinite = int((~np.isfinite(y.to_numpy(dtype=np.float64))).sum())
        if infinite:
            raise ProbeError(
                f"target {name!r} has {infinite} infinite value(s); "
                "a regression target must be finite (fix them, or leave them empty)"
            )
        if y.nunique() < 2:
            raise ProbeError(f"target {name!r} has one value ({y.iloc[0]}) in the selection")
        return Target(name, task, y.to_numpy(dtype=np.float64), missing=missing)

    text = values.astype(str).to_numpy()
    classes = sorted(set(text.tolist()))
    if len(classes) < 2:
        shown = classes[0] if classes else "none"
        raise ProbeError(
            f"target {name!r} has one class ({shown!r}) in the selection of {len(text)} "
            "units; a probe needs at least two (check --where)"
        )
    positive = config.positive
    if positive is not None and positive not in classes:
        raise ProbeError(
            f"--positive {positive!r} is not a class of {name!r} ({', '.join(classes)})"
        )
    if task == "binary":
        if len(classes) > 2 and positive is None:
            raise ProbeError(
                f"target {name!r} has {len(classes)} classes ({', '.join(classes)}): use "
                "--task multiclass, --positive CLASS (one against the rest), or --where"
            )
        if positive is None:
            counts = {c: int((text == c).sum()) for c in classes}
            positive = min(reversed(classes), key=lambda c: counts[c])  # rarer; tie: last
        negative = next(c for c in classes if c != positive) if len(classes) == 2 else None
        ordered = (negative or f"not {positive}", positive)
        return Target(name, task, (text == positive).astype(np.int64), ordered, positive, missing)
    if positive is not None:
        raise ProbeError(
            f"--positive {positive!r} makes a binary task ({positive} against the rest); "
            "drop --task multiclass"
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in text], dtype=np.int64)
    return Target(name, "multiclass", y, tuple(classes), None, missing)
