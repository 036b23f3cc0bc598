"""Metrics of out-of-fold scores, with 95 % bootstrap confidence intervals over groups.

Point values come from scikit-learn: AUROC (``roc_auc_score``; macro one-vs-rest for
multi-class), balanced accuracy (``balanced_accuracy_score``), sensitivity at 95 %
specificity (from ``roc_curve``: the highest true-positive rate at a false-positive
rate of at most 5 %), MAE and MAPE.

Classification metrics are computed **per outer test fold** and averaged over the folds
of a repeat, as scikit-learn's ``cross_validate`` scores each fold. Scores of different
folds come from different models and are not on one scale: a strongly regularised
model scores every unit near its training fold's class prior, and a test fold rich in
a class trains on fewer of it, so ranking the pooled out-of-fold scores of all folds
would rank units against their own labels (an information-free feature got AUROC 0.44,
its interval excluding 0.5). A fold counts for a metric when its test part holds at
least two classes; class-averaged metrics (macro AUROC, balanced accuracy) average
over the classes present in it. MAE and MAPE are means of per-unit errors, which need
no common scale: they are pooled over folds (the fold-size-weighted mean of the per-fold
values). Each metric is computed per repeat; the report gives the mean and the
standard deviation over repeats.

The interval resamples *groups* (subjects) with replacement, because units of one
subject are not independent: a bootstrap sample is a vector of per-unit weights (how
often the unit's group was drawn), and the statistic is computed exactly as the point
value (per fold, averaged over folds, then over repeats) under those weights; groups
never span folds, so each fold is resampled by its own groups. Scikit-learn's metrics
take such weights too, but calling them a thousand times per metric costs minutes at
100k units; the weighted forms below are the same formulas evaluated for many weight
vectors at once (sorting the scores once, summing per group first where the formula
allows), and the tests check them against scikit-learn with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    mean_absolute_error,
    mean_absolute_percentage_error,
    roc_auc_score,
    roc_curve,
)

#: The metrics of each task, in report order.
METRICS = {
    "binary": ("auroc", "balanced_accuracy", "sensitivity_at_95_specificity"),
    "multiclass": ("auroc", "balanced_accuracy"),
    "regression": ("mae", "mape"),
}
SPECIFICITY = 0.95
#: Bootstrap weight vectors evaluated together (bounds memory: chunk x units floats).
_CHUNK = 64


@dataclass(frozen=True)
class Estimate:
    """A metric: mean and standard deviation over repeats, and its 95 % bootstrap interval."""

    mean: float
    std: float
    ci_low: float | None
    ci_high: float | None
    per_repeat: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "std_over_repeats": self.std,
            "ci95": None if self.ci_low is None else [self.ci_low, self.ci_high],
            "per_repeat": list(self.per_repeat),
        }

    def contains(self, value: float) -> bool:
        if self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low <= value <= self.ci_high


# ---- point values (scikit-learn) ----------------------------------------------------

#: Metrics pooled over folds (means of per-unit errors); the others are per fold.
POOLED = frozenset({"mae", "mape"})


def point(
    metric: str, task: str, y: np.ndarray, score: np.ndarray, fold: np.ndarray | None = None
) -> float:
    """One metric of one repeat's out-of-fold scores: the mean over the test folds in
    ``fold`` (``[n]``, each unit's test fold) that hold two classes; NaN if none does.
    Without ``fold`` (or for a pooled metric), one value over all units."""
    if fold is None or metric in POOLED:
        return _point(metric, task, y, score)
    values = [
        _point(metric, task, y[test], score[test])
        for test in _test_folds(fold)
        if len(np.unique(y[test])) >= 2
    ]
    return float(np.mean(values)) if values else float("nan")


def _point(metric: str, task: str, y: np.ndarray, score: np.ndarray) -> float:
    if metric == "auroc":
        if task == "multiclass":  # macro one-vs-rest over the classes present
            present = np.unique(y)
            return float(np.mean([roc_auc_score(y == k, score[:, k]) for k in present]))
        return float(roc_auc_score(y, score))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(y, predicted_class(task, score)))
    if metric == "sensitivity_at_95_specificity":
        fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
        return float(tpr[fpr <= 1 - SPECIFICITY + 1e-12].max())
    if metric == "mae":
        return float(mean_absolute_error(y, score))
    if metric == "mape":
        return float(mean_absolute_percentage_error(y, score))
    raise ValueError(f"unknown metric {metric}")


def _test_folds(fold: np.ndarray) -> list[np.ndarray]:
    return [fold == k for k in np.unique(fold)]


def predicted_class(task: str, score: np.ndarray) -> np.ndarray:
    """Binary: positive when its probability exceeds 0.5; multi-class: the most probable."""
    if task == "multiclass":
        return np.argmax(score, axis=1)
    return (score > 0.5).astype(np.int64)


# ---- bootstrap over groups ----------------------------------------------------------


def group_draws(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_boot`` resamples of the groups: (group index of each unit, counts [n_boot, G])."""
    names, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)
    return index, counts.astype(np.float64)


def estimate(
    metric: str,
    task: str,
    y: np.ndarray,
    scores: np.ndarray,
    folds: np.ndarray,
    draws: tuple[np.ndarray, np.ndarray] | None,
) -> Estimate:
    """Mean and std over repeats of ``scores`` ``[R, n(, K)]`` evaluated on the test folds
    ``folds`` ``[R, n]`` (see the module docstring), and the group-bootstrap CI."""
    per_repeat = tuple(point(metric, task, y, s, f) for s, f in zip(scores, folds, strict=True))
    values = np.asarray(per_repeat)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    if draws is None or draws[1].shape[0] == 0:
        return Estimate(float(values.mean()), std, None, None, per_repeat)
    index, counts = draws
    weighted = [
        per_fold_weighted(metric, task, y, s, index, f, counts.shape[1])
        for s, f in zip(scores, folds, strict=True)
    ]
    stats = np.empty(counts.shape[0])
    for start in range(0, counts.shape[0], _CHUNK):
        chunk = counts[start : start + _CHUNK]
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample without positives
            stats[start : start + _CHUNK] = _nanmean([f(chunk) for f in weighted], len(chunk))
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return Estimate(float(values.mean()), std, None, None, per_repeat)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Estimate(float(values.mean()), std, float(low), float(high), per_repeat)


Weighted = Callable[[np.ndarray], np.ndarray]


def per_fold_weighted(
    metric: str,
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    fold: np.ndarray,
    n_groups: int,
) -> Weighted:
    """:func:`weighted_metric` of each test fold in ``fold``, averaged over the folds
    where it is defined (NaN where no fold is), as :func:`point` does."""
    if metric in POOLED:
        return weighted_metric(metric, task, y, score, group, n_groups)
    parts = [
        weighted_metric(metric, task, y[test], score[test], group[test], n_groups)
        for test in _test_folds(fold)
        if len(np.unique(y[test])) >= 2
    ]
    return lambda c: _nanmean([f(c) for f in parts], c.shape[0])


def weighted_metric(
    metric: str,
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    group: np.ndarray,
    n_groups: int | None = None,
) -> Weighted:
    """The metric under group weights: ``counts`` ``[b, G]`` -> ``[b]`` values.

    ``group`` holds each unit's group index (0..G-1, ``G = n_groups``, default: the
    largest index + 1); unit i weighs ``counts[:, group[i]]``. A weighting that leaves
    fewer than two classes gives NaN. Sums of per-unit quantities are first summed per
    group, so those metrics cost O(b x G); the ROC statistics need the units in score
    order, O(b x n).
    """
    if metric == "auroc":
        if task == "multiclass":
            per_class = [_Ranked(y == k, score[:, k], group) for k in np.unique(y)]
            return lambda c: _nanmean([r.auroc(c) for r in per_class], c.shape[0])
        return _Ranked(y == 1, score, group).auroc
    if metric == "sensitivity_at_95_specificity":
        return _Ranked(y == 1, score, group).sensitivity_at_specificity
    size = int(group.max()) + 1 if n_groups is None else n_groups

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values.astype(np.float64), minlength=size)

    if metric == "balanced_accuracy":
        correct = predicted_class(task, score) == y
        parts = [(per_group(correct & (y == k)), per_group(y == k)) for k in np.unique(y)]

        def balanced(c: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls = np.array([(c @ hit) / (c @ all_) for hit, all_ in parts])
            value = _nanmean(list(recalls), c.shape[0])
            return np.where(np.isfinite(recalls).sum(axis=0) >= 2, value, np.nan)

        return balanced
    if metric in ("mae", "mape"):
        error = np.abs(score - y)
        if metric == "mape":
            error = error / np.maximum(np.abs(y), np.finfo(np.float64).eps)
        total, units = per_group(error), per_group(np.ones(len(y)))
        return lambda c: (c @ total) / (c @ units)
    raise ValueError(f"unknown metric {metric}")


def _nanmean(rows: list[np.ndarray], size: int) -> np.ndarray:
    """Column means ignoring NaN (NaN where a column has no value), without warnings."""
    if not rows:
        return np.full(size, np.nan)
    stacked = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(stacked)
    total = np.where(finite, stacked, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class _Ranked:
    """Scores sorted once (ties grouped) with each unit's group, for weighted ROC statistics."""

    def __init__(self, positive: np.ndarray, score: np.ndarray, group: np.ndarray) -> None:
        order = np.argsort(score, kind="mergesort")
        ranked = score[order]
        self.group = group[order]
        self.positive = positive[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        self.starts = None if len(starts) == len(score) else starts  # None: no ties

    def _per_score(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative weight at each distinct score, ascending: [b, distinct]."""
        w = counts[:, self.group].astype(_exact_dtype(counts, len(self.group)))
        pos, neg = w * self.positive, w * ~self.positive
        if self.starts is None:
            return pos, neg
        return np.add.reduceat(pos, self.starts, axis=1), np.add.reduceat(neg, self.starts, axis=1)

    def auroc(self, counts: np.ndarray) -> np.ndarray:
        """P(score of a positive > score of a negative) + half the ties, under weights."""
        pos, neg = self._per_score(counts)
        below = np.cumsum(neg, axis=1) - neg
        total_pos = pos.sum(axis=1, dtype=np.float64)
        total_neg = neg.sum(axis=1, dtype=np.float64)
        value = (pos * (below + 0.5 * neg)).sum(axis=1, dtype=np.float64) / (total_pos * total_neg)
        return np.where((total_pos > 0) & (total_neg > 0), value, np.nan)

    def sensitivity_at_specificity(self, counts: np.ndarray) -> np.ndarray:
        """Highest true-positive rate among thresholds with specificity >= 95 %."""
        pos, neg = self._per_score(counts)
        total_pos = pos.sum(axis=1, dtype=np.float64)
        total_neg = neg.sum(axis=1, dtype=np.float64)
        # From the highest threshold down, false positives only grow: the best threshold
        # is the last one whose false-positive weight is within the allowance.
        false_pos = np.cumsum(neg[:, ::-1], axis=1)
        allowed = (1 - SPECIFICITY) * total_neg[:, None] + 1e-12 * np.maximum(total_neg[:, None], 1)
        last = (false_pos <= allowed).sum(axis=1) - 1
        true_pos = np.cumsum(pos[:, ::-1], axis=1)
        rows = np.arange(len(last))
        best = np.where(last >= 0, true_pos[rows, np.maximum(last, 0)], 0.0) / total_pos
        return np.where((total_pos > 0) & (total_neg > 0), best, np.nan)


def _exact_dtype(counts: np.ndarray, units: int) -> type[np.floating]:
    """float32 when every partial sum of weights (integers, and the halves of ties)
    stays below 2**22, where float32 holds them exactly: half the memory traffic."""
    return np.float32 if units * float(counts.max(initial=0)) < 2**22 else np.float64
