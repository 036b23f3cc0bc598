"""The leakage audit, run before any probe is trained.

**Near-duplicates.** The same sound stored twice (re-encoded, trimmed, gain-changed or
copied under another subject id) in two different groups lets a probe score a test unit
by remembering its twin. Every unit's nearest neighbours are found with the project's
FAISS index (:class:`~hear_features.index.VectorIndex`, cosine; exact up to its flat
threshold, IVF with a fixed small nprobe above it); pairs closer than the threshold
that belong to different groups are listed by id. ``--duplicates merge`` joins their
groups, so no split can separate them.

**Confounds.** A label that can be predicted from how or where a recording was made
(sample rate, dataset, device, or any study column the user names) says nothing about
the sound: the probe may just be reading the recording chain. Each such column alone,
one-hot encoded (or standardised when it is numeric with many values), goes through the
same grouped cross-validated linear model as the embeddings; above an out-of-fold AUROC
of 0.8 (R^2 of 0.5 for regression) the report warns that the label is confounded with it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score

from hear_features.errors import ProbeError
from hear_features.index import IndexConfig, VectorIndex
from hear_features.probe import metrics, models
from hear_features.probe.config import CONFOUND_AUROC, CONFOUND_R2, ProbeConfig
from hear_features.probe.target import Target

log = logging.getLogger(__name__)

#: Neighbours searched per unit at first; widened while a unit's k-th is still a duplicate.
_FIRST_K = 16
#: IVF lists probed per query above the index's flat threshold. Near-duplicates sit
#: almost on top of each other, so they share a list or a neighbouring one; tuning nprobe
#: for recall@10 of *ordinary* neighbours (the index's default) probed 768 of 1264 lists
#: on 100k vectors and took 27 minutes. bench/probe.py checks planted copies are found.
AUDIT_NPROBE = 16
_MAX_K = 1024
#: Numeric columns with at most this many distinct values are treated as categories.
_MAX_LEVELS_NUMERIC = 20


@dataclass(frozen=True)
class DuplicatePair:
    """Two units of different groups closer than the threshold (cosine distance)."""

    unit_a: str
    unit_b: str
    group_a: str
    group_b: str
    distance: float


@dataclass
class DuplicateAudit:
    threshold: float
    pairs: list[DuplicatePair]
    within_group: int
    index: str
    truncated: bool = False
    across_folds: int = 0
    action: str = "warn"

    def as_dict(self, limit: int = 10_000) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "pairs_across_groups": len(self.pairs),
            "pairs_across_folds": self.across_folds,
            "pairs_within_groups": self.within_group,
            "action": self.action,
            "index": self.index,
            "neighbour_search_truncated": self.truncated,
            "pairs": [asdict(p) for p in self.pairs[:limit]],
        }


@dataclass(frozen=True)
class Confound:
    """How well one metadata column alone predicts the target, out of fold."""

    column: str
    encoding: str
    levels: int
    metric: str
    score: float | None
    confounded: bool
    note: str = ""


def near_duplicates(
    vectors: np.ndarray, units: np.ndarray, groups: np.ndarray, threshold: float
) -> DuplicateAudit:
    """Pairs of units in different groups whose cosine distance is below ``threshold``."""
    n = len(vectors)
    ids = np.arange(n, dtype=np.int64)
    index = VectorIndex.build(ids, vectors, IndexConfig(device="cpu", nprobe=AUDIT_NPROBE))
    k = min(n, _FIRST_K)
    while True:
        found = index.search(vectors, k)
        saturated = bool((found.distances[:, -1] < threshold).any())
        if not saturated or k >= min(n, _MAX_K):
            break
        k = min(n, _MAX_K, k * 4)
    across: dict[tuple[int, int], float] = {}
    within: set[tuple[int, int]] = set()
    rows, cols = np.nonzero((found.distances < threshold) & (found.ids >= 0))
    neighbours = found.ids[rows, cols].tolist()
    distances = found.distances[rows, cols].tolist()
    for i, j, d in zip(rows.tolist(), neighbours, distances, strict=True):
        if i == j:
            continue
        key = (min(i, j), max(i, j))
        if groups[i] == groups[j]:
            within.add(key)
        else:
            across[key] = min(across.get(key, np.inf), d)
    pairs = [
        DuplicatePair(str(units[a]), str(units[b]), str(groups[a]), str(groups[b]), max(0.0, d))
        for (a, b), d in across.items()
    ]
    pairs.sort(key=lambda p: (p.distance, p.unit_a, p.unit_b))
    truncated = saturated and k < n
    if truncated:
        log.warning("near-duplicate search stopped at %d neighbours per unit", k)
    return DuplicateAudit(threshold, pairs, len(within), index.kind, truncated)


def pair_indices(audit: DuplicateAudit, units: np.ndarray) -> list[tuple[int, int]]:
    """The audit's pairs as row indices into ``units``."""
    where = {str(u): i for i, u in enumerate(units)}
    return [(where[p.unit_a], where[p.unit_b]) for p in audit.pairs]


def confounds(
    frame: pd.DataFrame,
    target: Target,
    folds: np.ndarray,
    groups: np.ndarray,
    columns: list[str],
    config: ProbeConfig,
) -> list[Confound]:
    """Score each column in ``columns`` (present in ``frame``) as a predictor of the target."""
    results = []
    for column in columns:
        if column == target.column:
            continue
        values = frame[column]
        levels = int(values.nunique(dropna=False))
        if levels < 2:
            results.append(
                Confound(column, "-", levels, _metric(target), None, False, "one value only")
            )
            continue
        x, encoding = _encode(values)
        oof = models.linear(column, x, target, folds[:1], groups, config)
        score = _score(target, oof.scores[0], folds[0])
        threshold = CONFOUND_AUROC if target.is_classification else CONFOUND_R2
        results.append(
            Confound(column, encoding, levels, _metric(target), score, score > threshold)
        )
    return results


def confound_columns(
    frame: pd.DataFrame, defaults: tuple[str, ...], named: tuple[str, ...]
) -> list[str]:
    """The default columns that exist, then the user's (which must exist)."""
    unknown = [c for c in named if c not in frame.columns]
    if unknown:
        raise ProbeError(
            f"unknown confound column(s) {', '.join(map(repr, unknown))}; the selection has: "
            f"{', '.join(sorted(str(c) for c in frame.columns if c != 'unit_id'))}"
        )
    return list(dict.fromkeys([c for c in defaults if c in frame.columns] + list(named)))


def _metric(target: Target) -> str:
    return "auroc" if target.is_classification else "r2"


def _score(target: Target, scores: np.ndarray, fold: np.ndarray) -> float:
    """AUROC per test fold, averaged (as the probe's; see :mod:`metrics`); R^2 of the
    pooled out-of-fold predictions (conservative: a training-fold mean predicts a test
    fold's values below their own mean, so a column without information scores <= 0)."""
    if target.is_classification:
        return metrics.point("auroc", target.task, target.y, scores, fold)
    return float(r2_score(target.y, scores))


def _encode(values: pd.Series) -> tuple[np.ndarray, str]:
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )
    if numeric and values.nunique() > _MAX_LEVELS_NUMERIC:
        filled = values.astype(np.float64)
        missing = filled.isna().to_numpy()
        column = filled.fillna(filled.median()).to_numpy()
        x = np.column_stack([column, missing]) if missing.any() else column[:, None]
        return x.astype(np.float64), "numeric"
    text = values.astype(object).where(values.notna(), "<missing>").astype(str)
    return pd.get_dummies(text).to_numpy(dtype=np.float64), "one-hot"
