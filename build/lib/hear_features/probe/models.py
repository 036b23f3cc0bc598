"""The probes: standardisation + a linear model, fitted fold by fold, out-of-fold scores.

Classification: ``StandardScaler`` + ``LogisticRegressionCV`` (L2, lbfgs), whose C is
chosen by an inner grouped, stratified k-fold on the outer training set (log loss).
Regression: ``StandardScaler`` + ``RidgeCV`` with alpha chosen the same way (MAE).
The chance baseline is scikit-learn's ``DummyClassifier(strategy="prior")`` (the class
frequencies, a constant: AUROC 0.5, the majority class) or ``DummyRegressor`` (the
training fold's mean).
Nothing about a test fold, not even its feature means, reaches the model that scores it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hear_features.errors import ProbeError
from hear_features.probe.config import ProbeConfig
from hear_features.probe.splits import inner_splits
from hear_features.probe.target import Target

#: Feature matrices with at least this many numbers use the default BLAS threads.
_THREADED_BLAS_SIZE = 4_000_000


@dataclass
class OutOfFold:
    """Out-of-fold scores of one model for every repeat.

    ``scores``: ``[repeats, n]`` (binary: probability of the positive class; regression:
    the prediction) or ``[repeats, n, classes]`` (multi-class probabilities).
    ``chosen``: the regularisation picked in each fold (C or alpha), per repeat.
    """

    name: str
    scores: np.ndarray
    features: int
    chosen: list[list[float]] = field(default_factory=list)
    not_converged: int = 0


def linear(
    name: str,
    x: np.ndarray,
    target: Target,
    folds: np.ndarray,
    groups: np.ndarray,
    config: ProbeConfig,
) -> OutOfFold:
    """The linear probe on features ``x`` ``[n, d]`` with the fold plan ``folds`` ``[R, n]``."""
    out = _empty_scores(target, folds.shape[0])
    result = OutOfFold(name, out, int(x.shape[1]))
    for r, fold in enumerate(folds):
        chosen: list[float] = []
        for k in np.unique(fold):
            test = fold == k
            train = ~test
            _require_all_classes(target, train, r, int(k))
            inner = inner_splits(target, target.y[train], groups[train], config.seed + r)
            model = _linear_model(target, inner, config, config.seed + r)
            with (
                warnings.catch_warnings(record=True) as caught,
                threadpool_limits(limits=_blas_threads(x)),
            ):
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(x[train], target.y[train])
            result.not_converged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            out[r, test] = _predict(model, target, x[test])
            fitted = model[-1]
            chosen.append(float(np.ravel(getattr(fitted, "C_", getattr(fitted, "alpha_", 0)))[0]))
        result.chosen.append(chosen)
    return result


def chance(target: Target, folds: np.ndarray) -> OutOfFold:
    """Chance: a constant score for classification, the training mean for regression.

    Classification scores are the class frequencies of the whole selection, the same
    for every unit: a constant carries no information (AUROC exactly 0.5, the majority
    class everywhere). Metrics are taken per test fold (see
    :mod:`~hear_features.probe.metrics`), where a fold's training prior would score the
    same; one constant also keeps the pooled plots honest.
    """
    out = _empty_scores(target, folds.shape[0])
    x = np.zeros((len(target.y), 1))
    if target.is_classification:
        prior = DummyClassifier(strategy="prior").fit(x, target.y)
        out[:] = _predict(prior, target, x)
        return OutOfFold("chance", out, 0)
    for r, fold in enumerate(folds):
        for k in np.unique(fold):
            test = fold == k
            model = DummyRegressor(strategy="mean").fit(x[~test], target.y[~test])
            out[r, test] = _predict(model, target, x[test])
    return OutOfFold("chance", out, 0)


def _linear_model(
    target: Target, inner: list[tuple[np.ndarray, np.ndarray]], config: ProbeConfig, seed: int
) -> Pipeline:
    if target.is_classification:
        model = LogisticRegressionCV(
            Cs=list(config.cs),
            cv=inner,
            l1_ratios=(0.0,),
            scoring="neg_log_loss",
            solver="lbfgs",
            max_iter=config.max_iter,
            random_state=seed,
            use_legacy_attributes=False,
        )
    else:
        model = RidgeCV(alphas=list(config.alphas), cv=inner, scoring="neg_mean_absolute_error")
    return make_pipeline(StandardScaler(), model)


def _predict(model: Any, target: Target, x: np.ndarray) -> np.ndarray:
    if not target.is_classification:
        return np.asarray(model.predict(x), dtype=np.float64)
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    if target.task == "binary":
        return proba[:, 1]
    return proba


def _blas_threads(x: np.ndarray) -> int | None:
    """One BLAS thread for small problems: the solver's many tiny matrix products are
    several times slower with threads that wait for busy cores; large ones gain."""
    return 1 if x.size < _THREADED_BLAS_SIZE else None


def _empty_scores(target: Target, repeats: int) -> np.ndarray:
    n = len(target.y)
    if target.task == "multiclass":
        return np.zeros((repeats, n, len(target.classes)), dtype=np.float64)
    return np.zeros((repeats, n), dtype=np.float64)


def _require_all_classes(target: Target, train: np.ndarray, repeat: int, fold: int) -> None:
    if not target.is_classification:
        return
    present = np.unique(target.y[train])
    if len(present) < len(target.classes):
        missing = [c for i, c in enumerate(target.classes) if i not in set(present.tolist())]
        raise ProbeError(
            f"fold {fold + 1} of repeat {repeat + 1} leaves no {', '.join(map(repr, missing))} "
            "to train on (its groups all fell in the test fold); use fewer --folds"
        )
